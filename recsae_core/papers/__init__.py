"""The papers' analyses, one module per paper (``p1``, ``p2``, ``p3``): each holds the analysis steps its
chapter calls, with docstrings citing the section of ``../shared/reference/papers.md`` they follow.

Import the module you need (``from recsae_core.papers import p3``); nothing is imported here.
"""
