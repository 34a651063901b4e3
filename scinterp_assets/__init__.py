"""scinterp: does single-cell foundation-model attention carry regulatory signal beyond co-expression?"""

__version__ = "0.1.0"
