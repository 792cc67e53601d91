"""The learning tiers' maths: component scores, the regime detector, the component-weight bandit,
the meta-learner, the decision flow and its report.
"""
