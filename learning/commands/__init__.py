"""ftlearn sub-commands, one module per group (see learning.cli).
"""
