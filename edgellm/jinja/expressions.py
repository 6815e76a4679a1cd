"""Expressions: a recursive-descent parser that compiles each expression to a function of the scope."""

from __future__ import annotations

from edgellm.jinja.values import UNDEFINED, TemplateError, bounded, to_str as _str


_COMPARE = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
_TESTS = {"defined": lambda v: v is not UNDEFINED, "none": lambda v: v is None, "string": lambda v: isinstance(v, str)}
_FILTERS = {"trim": lambda v: _str(v).strip(), "length": len}
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None}


def _raise_exception(message):
    raise TemplateError(_str(message))


class Expr:
    def __init__(self, tokens):
        self.tokens, self.i = list(tokens), 0

    def parse_all(self):
        if not self.tokens:
            raise TemplateError("chat_template: an empty expression.")
        expr = self.or_()
        if self.i < len(self.tokens):
            raise TemplateError(f"chat_template: unexpected {self.tokens[self.i][1]!r} in an expression.")
        return expr

    def peek(self, *values):
        return self.i < len(self.tokens) and self.tokens[self.i][1] in values and self.tokens[self.i][0] != "str"

    def take(self, value=None):
        if self.i >= len(self.tokens) or (value is not None and not self.peek(value)):
            raise TemplateError(f"chat_template: expected {value or 'more'} in an expression.")
        self.i += 1
        return self.tokens[self.i - 1]

    def or_(self):
        left = self.and_()
        while self.peek("or"):
            self.take()
            a, b = left, self.and_()
            left = lambda s, a=a, b=b: a(s) or b(s)
        return left

    def and_(self):
        left = self.not_()
        while self.peek("and"):
            self.take()
            a, b = left, self.not_()
            left = lambda s, a=a, b=b: a(s) and b(s)
        return left

    def not_(self):
        if self.peek("not"):
            self.take()
            a = self.not_()
            return lambda s: not a(s)
        return self.compare()

    def compare(self):
        left = self.sum()
        while True:
            if self.peek(*_COMPARE):
                op, a, b = _COMPARE[self.take()[1]], left, self.sum()
                left = lambda s, op=op, a=a, b=b: op(a(s), b(s))
            elif self.peek("in") or (self.peek("not") and self.i + 1 < len(self.tokens)
                                     and self.tokens[self.i + 1][1] == "in"):
                negate = self.take()[1] == "not"
                if negate:
                    self.take("in")
                a, b = left, self.sum()
                left = lambda s, a=a, b=b, n=negate: (a(s) in b(s)) != n
            elif self.peek("is"):
                self.take()
                negate = self.peek("not") and bool(self.take())
                name = self.take()[1]
                if name not in _TESTS:
                    raise TemplateError(f"chat_template: the test 'is {name}' is not supported by edgellm's "
                                        f"renderer ({', '.join(_TESTS)} are).")
                a = left
                left = lambda s, a=a, t=_TESTS[name], n=negate: t(a(s)) != n
            else:
                return left

    def sum(self):
        left = self.unary()
        while self.peek("+", "-", "~"):
            op, a, b = self.take()[1], left, self.unary()
            if op == "~":
                left = lambda s, a=a, b=b: bounded(_str(a(s)) + _str(b(s)))
            else:
                left = lambda s, a=a, b=b, op=op: _arith(op, a(s), b(s))
        return left

    def unary(self):
        if self.peek("-"):
            self.take()
            a = self.unary()
            return lambda s: _negative(a(s))
        return self.postfix(self.primary())

    def primary(self):
        kind, value = self.take()
        if kind in ("str", "num"):
            return lambda s: value
        if kind == "name":
            if value in _CONSTANTS:
                return lambda s: _CONSTANTS[value]
            if value == "raise_exception":
                return lambda s: _raise_exception
            return lambda s: s.get(value, UNDEFINED)
        if value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        raise TemplateError(f"chat_template: unexpected {value!r} in an expression.")

    def postfix(self, value):
        while True:
            if self.peek("."):
                self.take()
                name = self.take()[1]
                value = lambda s, v=value, k=name: _item(v(s), k)
            elif self.peek("["):
                self.take()
                key = self.or_()
                self.take("]")
                value = lambda s, v=value, k=key: _item(v(s), k(s))
            elif self.peek("("):
                self.take()
                args = [] if self.peek(")") else [self.or_()]
                while self.peek(","):
                    self.take()
                    args.append(self.or_())
                self.take(")")
                value = lambda s, f=value, a=args: _call(f(s), [x(s) for x in a])
            elif self.peek("|"):
                self.take()
                name = self.take()[1]
                if name not in _FILTERS:
                    raise TemplateError(f"chat_template: the filter '{name}' is not supported by edgellm's "
                                        f"renderer ({', '.join(_FILTERS)} are).")
                value = lambda s, v=value, f=_FILTERS[name]: f(v(s))
            else:
                return value


def _item(container, key):
    if container is UNDEFINED:
        raise TemplateError(f"chat_template: cannot look up {key!r} in an undefined value.")
    if isinstance(container, dict):
        return container.get(key, UNDEFINED)
    if isinstance(container, (list, tuple, str)) and isinstance(key, int) and -len(container) <= key < len(container):
        return container[key]
    return UNDEFINED


def _call(function, args):
    if function is not _raise_exception:
        raise TemplateError("chat_template: edgellm's renderer calls only raise_exception().")
    return function(*args)


def _negative(value):
    if not isinstance(value, (int, float)):  # a bool is an int: -true is -1, as in jinja2
        what = "an undefined value" if value is UNDEFINED else type(value).__name__
        raise TemplateError(f"chat_template: cannot apply unary - to {what}.")
    return -value


def _arith(op: str, a, b):
    if a is UNDEFINED or b is UNDEFINED:
        raise TemplateError(f"chat_template: {op} on an undefined value.")
    try:
        return bounded(a + b) if op == "+" else a - b
    except TypeError:
        raise TemplateError(f"chat_template: cannot apply {op} to {type(a).__name__} and {type(b).__name__}.") from None
