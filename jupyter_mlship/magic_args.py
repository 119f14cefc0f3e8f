"""Split a `%ship` line into words the way a Python user reads it.

IPython's own splitter cuts at every space, so `--sample rows[:2, :1]` or
`--sample df.sample(5, random_state=0)` arrive as two words. Here the line is read with Python's
tokenizer and cut only at whitespace outside brackets, parentheses, braces and string literals, so an
expression stays whole as typed. Quotes stay accepted and are kept in the word (the magic unquotes a
word that is one string literal), exactly like IPython's splitter did.
"""

from __future__ import annotations

import io
import tokenize

from IPython.utils.process import arg_split

OPENING, CLOSING = "([{", ")]}"
_IGNORED = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def split_magic_line(line: str) -> list[str]:
    """Words of ``line``: whitespace splits only outside brackets and string literals.

    A line Python's tokenizer cannot read (an unbalanced bracket, a stray quote) falls back to
    IPython's whitespace splitter, so such lines behave as they always did."""
    line = line.strip()
    if not line:
        return []
    try:
        spans = _top_level_spans(line)
    except (tokenize.TokenError, SyntaxError, _Unbalanced):
        return arg_split(line, strict=False)
    return [line[start:end] for start, end in spans]


class _Unbalanced(ValueError):
    pass


def _top_level_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the words: runs of tokens with no whitespace between them at depth 0."""
    spans: list[tuple[int, int]] = []
    depth, word_start, word_end = 0, None, 0
    for token in tokenize.generate_tokens(io.StringIO(line).readline):
        if token.type in _IGNORED or (token.type == tokenize.ERRORTOKEN and token.string.isspace()):
            continue
        if token.type == tokenize.ERRORTOKEN and token.string in "'\"":  # an unterminated string
            raise _Unbalanced(line)
        if token.start[0] != 1 or token.end[0] != 1:  # a magic line is one line; anything else is odd
            raise _Unbalanced(line)
        start, end = token.start[1], token.end[1]
        if word_start is None:
            word_start = start
        elif depth == 0 and start > word_end:  # whitespace at the top level ends a word
            spans.append((word_start, word_end))
            word_start = start
        if token.type == tokenize.OP and token.string in OPENING:
            depth += 1
        elif token.type == tokenize.OP and token.string in CLOSING:
            depth -= 1
            if depth < 0:
                raise _Unbalanced(line)
        word_end = end
    if depth != 0:
        raise _Unbalanced(line)
    if word_start is not None:
        spans.append((word_start, word_end))
    return spans
