#!/usr/bin/env python3
"""amalgamate.py — writes opstate.h and the chosen companions as ONE file.

    python3 amalgamate.py [--with lmdb,nats] [--lines] -o out.h
    python3 amalgamate.py [--with lmdb,nats] [--lines] --check out.h

The three headers stay the hand-written source of truth; the output is a
build product (never committed). It holds, in this order:

  * a stamp: opstate version, git commit, companions, "do not edit";
  * ONE switch, OPSTATE_AMALGAMATION_IMPLEMENTATION, that defines the
    per-header switches (OPSTATE_IMPLEMENTATION, OPSTATE_LMDB_IMPLEMENTATION,
    OPSTATE_NATS_IMPLEMENTATION) of the parts present;
  * opstate.h, then each chosen companion in the fixed order lmdb, nats,
    each between begin/end markers, each companion's `#include "opstate.h"`
    commented out (the core is above it);
  * ONE license: opstate.h's, moved to the end; the license blocks that
    close the companions are dropped.

Every header keeps its own include guard and implementation guard, so the
output mixes freely with the separate headers in one program (even in one
translation unit). --lines adds `#line N "opstate.h"` markers so compiler
messages and debuggers point at the original files; the names are the
repository-relative file names, which keeps the output independent of where
the tree or the output lives.

The output is byte-reproducible for a given tree: no dates, no absolute
paths. The commit is `git rev-parse --short HEAD` ("unknown" outside git),
followed by "+ local changes" when a source header differs from it.

--check FILE exits 0 when FILE is exactly what these options generate now,
1 when it differs. Errors (unknown companion, missing or misshapen header,
unwritable output) are one line on stderr and exit 2.

Python 3 standard library only.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.abspath(__file__))
PROG = "amalgamate.py"
SWITCH = "OPSTATE_AMALGAMATION_IMPLEMENTATION"


class Part:
    """One header: file name, macro prefix, what to link."""

    def __init__(self, name, filename, prefix, link=""):
        self.name = name
        self.filename = filename
        self.prefix = prefix
        self.link = link

    @property
    def guard(self):
        return self.prefix + "_H_INCLUDED"

    @property
    def switch(self):
        return self.prefix + "_IMPLEMENTATION"


CORE = Part("core", "opstate.h", "OPSTATE")
# Fixed order: the output never depends on how --with was spelled.
COMPANIONS = [
    Part("lmdb", "opstate_lmdb.h", "OPSTATE_LMDB", "-llmdb (Debian: liblmdb-dev)"),
    Part("nats", "opstate_nats.h", "OPSTATE_NATS", "-lnats (Debian: libnats-dev)"),
]


class Failure(Exception):
    """An error for the user: one line on stderr, exit 2."""


# ---------------------------------------------------------------------------
# Reading a header: find its directives (outside comments and literals).

_LEXEME = re.compile(
    rb"/\*.*?\*/"                     # block comment
    rb"|//[^\n]*"                     # line comment
    rb"|\"(?:\\.|[^\"\\\n])*\""       # string literal
    rb"|'(?:\\.|[^'\\\n])*'",         # character literal
    re.S,
)


def _blank(match):
    """Comments become spaces (newlines kept); literals become a stub."""
    text = match.group(0)
    if text.startswith(b"/"):
        return re.sub(rb"[^\n]", b" ", text)
    return text[:1] + re.sub(rb"[^\n]", b"x", text[1:-1]) + text[-1:]


class Header:
    """A parsed source header: its lines and where its directives are."""

    def __init__(self, part, data):
        self.part = part
        self.lines = data.split(b"\n")
        if self.lines and self.lines[-1] == b"":
            self.lines.pop()  # the final newline ends the last line
        code = _LEXEME.sub(_blank, data)
        if b"/*" in code:
            self.fail(None, "unterminated comment")
        self.code = code.split(b"\n")[: len(self.lines)]
        self.directives = [i for i, c in enumerate(self.code) if c.lstrip().startswith(b"#")]

    def fail(self, index, message):
        where = self.part.filename if index is None else "%s:%d" % (self.part.filename, index + 1)
        raise Failure("%s: %s" % (where, message))

    def directive(self, index):
        """A directive's text with the spelling normalised: '#include "x"'."""
        text = self.lines[index].strip()
        return b"#" + re.sub(rb"\s+", b" ", text[1:].strip())

    def find(self, pattern):
        rx = re.compile(pattern)
        return [i for i in self.directives if rx.match(self.directive(i))]

    def version(self):
        name = self.part.prefix + "_VERSION_STRING"
        hits = self.find(rb"#define " + name.encode() + rb' "[^"]*"')
        if not hits:
            return None
        return self.directive(hits[0]).split(b'"')[1].decode("ascii", "replace")

    def check_shape(self):
        """The skeleton STYLE.md prescribes; refuse what we cannot merge."""
        if not self.find(rb"#ifndef " + self.part.guard.encode() + rb"$"):
            self.fail(None, "no '#ifndef %s' include guard" % self.part.guard)
        if not self.find(rb"#if .*\b" + self.part.switch.encode() + rb"\b"):
            self.fail(None, "no '#if ... %s' implementation section" % self.part.switch)
        includes = self.find(rb'#include "')
        core_includes = self.find(rb'#include "opstate\.h"( |$)')
        for i in includes:
            if i not in core_includes:
                self.fail(i, "a quoted #include other than \"opstate.h\" cannot be amalgamated")
        if self.part is CORE and core_includes:
            self.fail(core_includes[0], "opstate.h includes itself")
        if self.part is not CORE and len(core_includes) != 1:
            self.fail(None, "expected exactly one '#include \"opstate.h\"', found %d" % len(core_includes))
        return core_includes

    def split_tail(self):
        """(body line count, license lines): the license is everything after
        the last directive, which must be a comment and the final #endif."""
        if not self.directives:
            self.fail(None, "no preprocessor directives")
        last = self.directives[-1]
        if not self.directive(last).startswith(b"#endif"):
            self.fail(last, "the last directive is not the implementation's #endif")
        for i in range(last + 1, len(self.lines)):
            if self.code[i].strip():
                self.fail(i, "code after the last #endif (only the license comment may follow)")
        tail = self.lines[last + 1:]
        while tail and not tail[0].strip():
            tail = tail[1:]
        while tail and not tail[-1].strip():
            tail = tail[:-1]
        return last + 1, tail


def read_header(part):
    path = os.path.join(ROOT, part.filename)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise Failure("%s: file not found (looked in %s)" % (part.filename, ROOT))
    except OSError as e:
        raise Failure("%s: %s" % (part.filename, e.strerror or e))
    return Header(part, data)


# ---------------------------------------------------------------------------
# The stamp.

def _git(*args):
    try:
        res = subprocess.run(
            ["git", "--no-optional-locks", "-C", ROOT] + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
        )
    except OSError:
        return None
    if res.returncode != 0:
        return None
    return res.stdout.decode("utf-8", "replace").strip()


def commit_stamp(parts):
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    changed = _git("status", "--porcelain", "--", *[p.filename for p in parts])
    if changed:
        return commit + " + local changes"
    return commit


def stamp(parts, versions, commit, lines):
    companions = parts[1:]
    names = ", ".join("%s %s" % (p.name, versions[p.name] or "(no version)") for p in companions)
    regen = "python3 amalgamate.py%s%s -o FILE" % (
        " --with " + ",".join(p.name for p in companions) if companions else "",
        " --lines" if lines else "",
    )
    switches = [p.switch for p in parts]
    links = [p.link for p in companions if p.link]
    out = []
    out.append("/* opstate amalgamation — generated by amalgamate.py — do not edit.")
    out.append("")
    out.append("   opstate %s, commit %s" % (versions["core"], commit))
    out.append("   companions: %s" % (names or "none (core only)"))
    out.append("   parts, in order: %s" % ", ".join(p.filename for p in parts))
    out.append("   (each between begin/end markers; one license, at the end)")
    out.append("   regenerate: %s" % regen)
    out.append("")
    out.append("   DO THIS in exactly one C or C++ file, before the include:")
    out.append("")
    out.append("       #define %s" % SWITCH)
    out.append("       #include \"<this file>\"")
    out.append("")
    if len(switches) == 1:
        sentence = "It defines %s (which also works alone)." % switches[0]
    else:
        sentence = "It defines %s and %s (each also works alone, e.g. to put one part's " \
                   "implementation in another file)." % (", ".join(switches[:-1]), switches[-1])
    out.extend(textwrap.wrap(sentence, width=76, initial_indent="   ", subsequent_indent="   ",
                             break_on_hyphens=False))
    out.append("   Everywhere else include this file for the declarations. Each part")
    out.append("   keeps its include and implementation guards, so mixing this file")
    out.append("   with the separate headers (same version) in one program is harmless.")
    if links:
        out.append("   Link with %s." % ", ".join(links))
    if companions:
        out.append("   No -D flag is needed (-std=c99, c11, gnu99, C++).")
    if any(p.name == "lmdb" for p in companions):
        out.append("   Under strict -std=c99 / c11, include this file with the switch")
        out.append("   before any system header: the LMDB part needs POSIX, asked for")
        out.append("   at its top (BUILD in the LMDB part's guide).")
    out.append("   Every other option (OPSTATE_STATIC, OPSTATE_NO_STDLIB, ...) is")
    out.append("   documented in the guide at the top of its part. */")
    return out


# ---------------------------------------------------------------------------
# Generation.

def choose(with_args):
    chosen = set()
    for arg in with_args or []:
        for name in arg.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in [c.name for c in COMPANIONS]:
                raise Failure("unknown companion '%s' (known: %s)"
                              % (name, ", ".join(c.name for c in COMPANIONS)))
            chosen.add(name)
    return [CORE] + [c for c in COMPANIONS if c.name in chosen]


def marker(word, filename):
    text = "/* ==== %s %s " % (word, filename)
    return text + "=" * max(4, 76 - len(text)) + " */"


def generate(parts, lines):
    headers = [read_header(p) for p in parts]
    includes = {h.part.name: h.check_shape() for h in headers}
    versions = {h.part.name: h.version() for h in headers}
    if not versions["core"]:
        raise Failure("opstate.h: no '#define OPSTATE_VERSION_STRING \"...\"'")
    bodies = {}
    license_lines = None
    for h in headers:
        end, tail = h.split_tail()
        bodies[h.part.name] = end
        if h.part is CORE:
            if not any(b"License" in t or b"LICENSE" in t for t in tail):
                h.fail(None, "no license comment after the last #endif")
            license_lines = tail

    out = [s.encode("utf-8") for s in stamp(parts, versions, commit_stamp(parts), lines)]
    out.append(b"")
    out.append(b"/* The one switch: turns on the implementation of every part below. */")
    out.append(b"#ifdef " + SWITCH.encode())
    for p in parts:
        out.append(b"#ifndef " + p.switch.encode())
        out.append(b"#define " + p.switch.encode())
        out.append(b"#endif")
    out.append(b"#endif")
    for h in headers:
        name = h.part.filename.encode()
        out.append(b"")
        out.append(marker("begin", h.part.filename).encode())
        if lines:
            out.append(b'#line 1 "' + name + b'"')
        body = list(h.lines[: bodies[h.part.name]])
        for i in includes[h.part.name]:
            # Same line, so the --lines numbering stays exact.
            body[i] = re.sub(
                rb'#(\s*)include(\s*)"opstate\.h"',
                b'/* #\\1include\\2"opstate.h"  (amalgamated above) */',
                body[i], count=1,
            )
        out.extend(body)
        out.append(marker("end", h.part.filename).encode())
    out.append(b"")
    out.extend(license_lines)
    return b"\n".join(out) + b"\n"


# ---------------------------------------------------------------------------
# Command line.

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise Failure(message)


def write_atomically(path, data):
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".amalgamate-", dir=directory)
    except OSError as e:
        raise Failure("%s: cannot write: %s" % (path, e.strerror or e))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise Failure("%s: cannot write: %s" % (path, e.strerror or e))


def first_difference(a, b):
    la, lb = a.split(b"\n"), b.split(b"\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return i + 1
    return min(len(la), len(lb)) + 1


def main(argv):
    ap = Parser(prog=PROG, description="Writes opstate.h and the chosen companions as one header.")
    ap.add_argument("--with", dest="with_", action="append", metavar="LIST",
                    help="companions, comma-separated: lmdb, nats (repeatable)")
    ap.add_argument("--lines", action="store_true",
                    help="add #line markers pointing at the original files")
    ap.add_argument("-o", dest="output", metavar="FILE", help="write here ('-': stdout)")
    ap.add_argument("--check", metavar="FILE",
                    help="exit 0 when FILE is exactly what these options generate now, else 1")
    args = ap.parse_args(argv)
    if (args.output is None) == (args.check is None):
        raise Failure("give exactly one of -o FILE or --check FILE")

    parts = choose(args.with_)
    data = generate(parts, args.lines)
    if args.output is not None:
        write_atomically(args.output, data)
        return 0
    try:
        with open(args.check, "rb") as f:
            current = f.read()
    except OSError as e:
        raise Failure("%s: %s" % (args.check, e.strerror or e))
    if current == data:
        return 0
    sys.stderr.write("%s: %s differs from what would be generated now (first at line %d)\n"
                     % (PROG, args.check, first_difference(current, data)))
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        sys.exit(2)
