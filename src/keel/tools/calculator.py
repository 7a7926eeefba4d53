"""Safe arithmetic: the expression is parsed with ``ast`` and only numbers and
arithmetic operators are evaluated. No names, calls or attributes, so nothing a
model writes can reach Python itself; huge powers are refused before they run.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from ..errors import InputError

__all__ = ["evaluate"]

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPONENT = 1000
_MAX_LENGTH = 500


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise InputError(f"exponent {right:g} is too large (limit {_MAX_EXPONENT})", hint="use a smaller exponent")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))  # type: ignore[no-any-return]
    raise InputError(
        f"{type(node).__name__} is not allowed in a calculation",
        hint="use numbers, + - * / // % ** and parentheses only",
    )


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression, or InputError saying what is wrong."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise InputError("the expression is empty", hint="pass an arithmetic expression such as 2 * (3 + 4)")
    if len(text) > _MAX_LENGTH:
        raise InputError(f"the expression is longer than {_MAX_LENGTH} characters", hint="split it up")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise InputError(
            f"{expression!r} is not an arithmetic expression", hint="use numbers, + - * / // % ** and parentheses only"
        ) from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise InputError("division by zero", hint="check the divisor") from None
    except OverflowError:
        raise InputError("the result is too large to represent", hint="use smaller numbers") from None
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise InputError("the result is not a finite number", hint="check the expression")
    return value
