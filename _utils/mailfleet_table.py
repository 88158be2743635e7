"""
The one plain-text table renderer of mailfleet (``--out=txt`` reports of the mailcheck
module and runner, the DNS runner's verification): columns padded to their widest cell, the
last column left free. Pure; imported plainly (Salt puts the utils directories on
``sys.path``).
"""
__virtualname__ = "mailfleet_table"


def __virtual__():
    return __virtualname__


def render(headers, rows):
    """``headers`` and ``rows`` (sequences of cells) as aligned text lines."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    out = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [str(row[-1])]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
