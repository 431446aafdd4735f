"""calculator: arithmetic through simpleeval (an AST walker, no `eval`), with tight limits.

Only numbers, arithmetic, comparisons and the math functions below; no strings, attributes or
comprehensions. A power whose result would exceed `_MAX_BITS` bits is refused before it is
computed, so `9**9**9` costs nothing; the expression itself is at most `_MAX_CHARS` long.
"""

from __future__ import annotations

import ast
import asyncio
import math
import operator

import simpleeval
from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError

_MAX_CHARS = 300
_MAX_BITS = 4096
_FUNCTIONS = {
    name: getattr(math, name)
    for name in (
        "sqrt",
        "exp",
        "log",
        "log10",
        "log2",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "atan2",
        "sinh",
        "cosh",
        "tanh",
        "floor",
        "ceil",
        "degrees",
        "radians",
        "hypot",
        "gcd",
        "lcm",
        "factorial",
    )
} | {"abs": abs, "round": round, "min": min, "max": max}
_NAMES = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _bits(value: object) -> float:
    if isinstance(value, int):
        return max(value.bit_length(), 1)
    if isinstance(value, float) and math.isfinite(value) and value:
        return abs(math.log2(abs(value))) + 1
    return 1


def _power(base: object, exponent: object) -> object:
    if isinstance(exponent, int | float) and abs(exponent) > 1 and _bits(base) * abs(exponent) > _MAX_BITS:
        raise ToolError(f"the power is too large (more than {_MAX_BITS} bits)")
    return operator.pow(base, exponent)


def _multiply(left: object, right: object) -> object:
    if _bits(left) + _bits(right) > _MAX_BITS * 2:
        raise ToolError("the product is too large")
    return operator.mul(left, right)


def _factorial(value: object) -> int:
    if not isinstance(value, int) or not 0 <= value <= 500:
        raise ToolError("factorial takes a whole number from 0 to 500")
    return math.factorial(value)


_OPERATORS = dict(simpleeval.DEFAULT_OPERATORS) | {ast.Pow: _power, ast.Mult: _multiply}
for _unwanted in (ast.In, ast.NotIn, ast.Is, ast.IsNot):  # meaningless on numbers
    _OPERATORS.pop(_unwanted, None)


_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)


class CalculatorArgs(Arguments):
    expression: str = Field(
        description="An arithmetic expression, e.g. '(3.5 + 2) * sqrt(16) / 7 % 3'. Functions: "
        + ", ".join(sorted(_FUNCTIONS))
        + "; constants: pi, e, tau.",
        max_length=_MAX_CHARS,
    )


def _check_shape(expression: str) -> None:
    """Numbers, names and calls only: a string or list operand (`'a' * 10**8`) is refused unparsed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError("that is not an arithmetic expression") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | complex):
            raise ToolError("only numbers can be calculated")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise ToolError("only the listed functions can be called")
        if not isinstance(node, _NODES):
            raise ToolError(f"'{type(node).__name__}' is not arithmetic")


def evaluate(expression: str) -> str:
    """The value of `expression` as text; ToolError for anything but a well-formed calculation."""
    _check_shape(expression)
    evaluator = simpleeval.SimpleEval(
        operators=_OPERATORS, functions=_FUNCTIONS | {"factorial": _factorial}, names=_NAMES
    )
    try:
        value = evaluator.eval(expression)
    except ToolError:
        raise
    except simpleeval.InvalidExpression as exc:
        raise ToolError(f"cannot calculate that: {exc}") from None
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (ArithmeticError, ValueError, TypeError, SyntaxError, RecursionError) as exc:
        raise ToolError(f"cannot calculate that: {type(exc).__name__}: {exc}") from None
    if isinstance(value, str | bytes) or not isinstance(value, int | float | bool | complex):
        raise ToolError("only numbers can be calculated")
    try:
        return repr(value) if isinstance(value, float) else str(value)
    except ValueError:  # Python refuses to print integers beyond 4300 digits
        raise ToolError("the result has too many digits") from None


async def calculator(args: CalculatorArgs, context: ToolContext) -> str:
    # A worker thread: even a bounded calculation must not hold the event loop.
    return await asyncio.to_thread(evaluate, args.expression)


TOOLS = (
    Tool("calculator", "Exact arithmetic: use it instead of calculating in your head.", CalculatorArgs, calculator),
)
