"""``ftlearn bench``: runner, variants, metrics, report and the bundled baseline strategies.
"""
