"""Champion/challenger routing between policy versions: the SQLite registry, the router and its
posterior maths.
"""
