#!/usr/bin/env python3
"""The workspace's structure rules that read source files (run by scripts/check-structure.sh,
after scripts/check-deps.sh's dependency rule; part of `make lint`).

1. No Rust source file over 600 lines, unless one of its first 5 lines states why:
   `// Over 600 lines: <reason>`.
2. No import circle between the modules of a crate: module files are the nodes; A -> B when A
   names a `crate::`, `super::` or `self::` path that resolves into B (in `use` items and in
   qualified paths). A module and its own ancestors or descendants may refer to each other.

Each violation is printed on one line; the exit status is 1 when there is any.
`--self-test` runs the checker against the fixture under scripts/tests/structure/.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import deque

MAX_LINES = 600
REASON = re.compile(r"^\s*//[/!]?\s*Over 600 lines:\s*\S")

# ---- 1. file length ----

def rust_files(root):
    res = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.rs"],
        cwd=root, capture_output=True, text=True, check=True)
    files = []
    for rel in sorted(set(res.stdout.split())):
        parts = rel.split("/")
        if "target" in parts or rel.startswith("scripts/tests/"):
            continue
        if os.path.isfile(os.path.join(root, rel)):
            files.append(rel)
    return files


def length_violation(path, rel):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if len(lines) <= MAX_LINES:
        return None
    if any(REASON.match(l) for l in lines[:5]):
        return None
    return (f"file length: {rel} has {len(lines)} lines (over {MAX_LINES} without "
            f"`// Over 600 lines: <reason>` in its first 5 lines)")


# ---- 2. import circles ----

def strip_code(text):
    """Removes comments, string and char literals (keeping line structure irrelevant)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            # a char literal ('a', '\n', '\u{..}') or a lifetime ('a)
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                i += len(m.group(0))
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d as e, *}}` -> ['a::b', 'a::c::d', 'a::c'] (renames and globs to their path)."""
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", tree.strip())
    results = []

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def walk(prefix, s):
        brace = s.find("{")
        if brace < 0:
            leaf = re.split(r"\s+as\s+", s)[0].strip()
            full = (prefix + leaf).rstrip("*").rstrip(":")
            if full:
                results.append(full)
            return
        head = s[:brace]
        inner = s[brace + 1:s.rfind("}")]
        for part in split_top(inner):
            if part == "self":
                results.append((prefix + head).rstrip(":"))
            elif part:
                walk(prefix + head, part)

    walk("", tree)
    return results


class Module:
    def __init__(self, path, file, child_dir):
        self.path = path          # tuple of names from the crate root
        self.file = file          # the file that holds it
        self.child_dir = child_dir


def module_tree(root_file):
    """Modules of the crate rooted at root_file: path tuple -> Module, and the file nodes."""
    modules = {}
    files = {}  # file -> module path that the file is (file node)
    todo = [((), root_file, os.path.dirname(root_file))]
    while todo:
        path, file, child_dir = todo.pop()
        if file in files:
            continue
        files[file] = path
        modules[path] = Module(path, file, child_dir)
        try:
            text = strip_code(open(file, encoding="utf-8", errors="replace").read())
        except OSError:
            continue
        # walk braces to know which inline module each `mod x;` is in
        stack = [(path, child_dir, 0)]
        depth = 0
        pending_path = None
        for m in re.finditer(r'#\s*\[\s*path\s*=\s*""\s*\]|\bmod\s+(r#)?(\w+)\s*([;{])|[{}]', text):
            tok = m.group(0)
            if tok.startswith("#"):
                # #[path = "..."]: strings are stripped; read it from the original text
                pending_path = "?"
                continue
            if tok == "{":
                depth += 1
                continue
            if tok == "}":
                depth -= 1
                while len(stack) > 1 and stack[-1][2] > depth:
                    stack.pop()
                continue
            name, kind = m.group(2), m.group(3)
            cur_path, cur_dir, _ = stack[-1]
            sub = cur_path + (name,)
            if kind == "{":
                depth += 1
                stack.append((sub, os.path.join(cur_dir, name), depth))
                modules[sub] = Module(sub, file, os.path.join(cur_dir, name))
            else:
                if pending_path:
                    pending_path = None
                    target = path_attr_target(file, name)
                    if target:
                        todo.append((sub, target, os.path.dirname(target)))
                    continue
                a = os.path.join(cur_dir, name + ".rs")
                b = os.path.join(cur_dir, name, "mod.rs")
                if os.path.isfile(a):
                    todo.append((sub, a, os.path.join(cur_dir, name)))
                elif os.path.isfile(b):
                    todo.append((sub, b, os.path.join(cur_dir, name)))
            pending_path = None
    return modules, files


def path_attr_target(file, name):
    raw = open(file, encoding="utf-8", errors="replace").read()
    m = re.search(r'#\s*\[\s*path\s*=\s*"([^"]+)"\s*\]\s*(?:#\s*\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+' + name + r"\s*;", raw)
    if not m:
        return None
    target = os.path.normpath(os.path.join(os.path.dirname(file), m.group(1)))
    return target if os.path.isfile(target) else None


def file_node(modules, path):
    """The file node (path of the module whose file holds `path`)."""
    mod = modules[path]
    p = path
    while p and modules[p[:-1]].file == mod.file:
        p = p[:-1]
    return p


def resolve(modules, here, segs):
    """Module path a `crate`/`super`/`self` path points into, or None."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("self", "super"):
        base, rest = here, segs
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = base
    cur = base
    for s in rest:
        cur = cur + (s,)
        if cur in modules:
            best = cur
        else:
            break
    return best


PATH_RE = re.compile(r"(?<![\w$:])(crate|self|super)((?:\s*::\s*(?:r#)?\w+)+)")
USE_RE = re.compile(r"\buse\s+([^;]*);")


def module_edges(modules, files):
    edges = {}
    for file, fpath in files.items():
        try:
            text = strip_code(open(file, encoding="utf-8", errors="replace").read())
        except OSError:
            continue
        # which module each offset is in: inline modules by braces
        regions = []  # (start, end, module path)
        stack = [(fpath, 0)]
        depth = 0
        marks = []
        for m in re.finditer(r"\bmod\s+(?:r#)?(\w+)\s*\{|[{}]", text):
            tok = m.group(0)
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                while len(stack) > 1 and stack[-1][1] > depth:
                    stack.pop()
                    marks.append((m.end(), stack[-1][0]))
            else:
                depth += 1
                sub = stack[-1][0] + (m.group(1),)
                stack.append((sub, depth))
                marks.append((m.end(), sub))

        def module_at(pos):
            cur = fpath
            for off, p in marks:
                if off > pos:
                    break
                cur = p
            return cur

        refs = []
        for m in USE_RE.finditer(text):
            here = module_at(m.start())
            for p in expand_use(m.group(1)):
                refs.append((here, p.split("::")))
        for m in PATH_RE.finditer(text):
            here = module_at(m.start())
            segs = [m.group(1)] + [s.strip().replace("r#", "") for s in m.group(2).split("::") if s.strip()]
            # `crate::x()` / `crate::x!` names a function or macro `x` (maybe re-exported where
            # the path says), never a module `x`.
            if text[m.end():m.end() + 3].lstrip().startswith(("(", "!")):
                segs = segs[:-1]
            refs.append((here, segs))
        src = fpath
        for here, segs in refs:
            segs = [s.replace("r#", "") for s in segs if s]
            target = resolve(modules, here, segs)
            if target is None:
                continue
            dst = file_node(modules, target)
            if dst == src or dst[:len(src)] == src or src[:len(dst)] == dst:
                continue
            edges.setdefault(src, set()).add(dst)
    return edges


def cycles(nodes, edges):
    """One shortest cycle through each node that lies on one, deduplicated."""
    # strongly connected components (iterative Tarjan)
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(set(comp))
    found, seen = [], set()
    for comp in comps:
        for n in sorted(comp):
            # BFS from n back to n inside the component
            prev = {}
            q = deque([n])
            done = False
            while q and not done:
                v = q.popleft()
                for w in sorted(edges.get(v, ())):
                    if w not in comp:
                        continue
                    if w == n:
                        path = [v]
                        while path[-1] != n:
                            path.append(prev[path[-1]])
                        cyc = list(reversed(path))
                        key = frozenset(zip(cyc, cyc[1:] + cyc[:1]))
                        if key not in seen:
                            seen.add(key)
                            found.append(cyc)
                        done = True
                        break
                    if w not in prev and w != n:
                        prev[w] = v
                        q.append(w)
    return found


def name_of(path):
    return "::".join(path) if path else "crate"


def crate_cycles(label, root_file):
    modules, files = module_tree(root_file)
    edges = module_edges(modules, files)
    out = []
    for cyc in cycles(set(files.values()), edges):
        rot = cyc.index(min(cyc))
        cyc = cyc[rot:] + cyc[:rot]
        out.append(f"import circle: {label}: " + " -> ".join(name_of(p) for p in cyc + [cyc[0]]))
    return out


def workspace_metadata(root):
    return json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
        cwd=root, capture_output=True, text=True, check=True).stdout)


def workspace_crates(meta):
    crates = []
    for pkg in meta["packages"]:
        for t in pkg["targets"]:
            kinds = t["kind"]
            if "custom-build" in kinds:
                continue
            label = pkg["name"] if ("lib" in kinds or "proc-macro" in kinds) else f"{pkg['name']} ({kinds[0]} {t['name']})"
            crates.append((label, t["src_path"]))
    return crates


# ---- the checks ----

def check(root):
    meta = workspace_metadata(root)
    problems = []
    for rel in rust_files(root):
        v = length_violation(os.path.join(root, rel), rel)
        if v:
            problems.append(v)
    for label, src in workspace_crates(meta):
        problems.extend(crate_cycles(label, src))
    return problems


def self_test(root):
    fixture = os.path.join(root, "scripts", "tests", "structure", "src", "lib.rs")
    got = crate_cycles("fixture", fixture)
    failures = []
    want = "import circle: fixture: a -> b -> a"
    if want not in got:
        failures.append(f"the a <-> b circle is not found (got {got})")
    want3 = "import circle: fixture: ring::one -> ring::three -> ring::two -> ring::one"
    if want3 not in got:
        failures.append(f"the three-module circle (through a use tree and a qualified path) is not found (got {got})")
    for line in got:
        if "parent" in line or "crate" in line.split(": ", 2)[-1]:
            failures.append(f"a parent/child reference is reported: {line}")
        if "quiet" in line:
            failures.append(f"a reference inside a comment or string is reported: {line}")
        if "table" in line:
            failures.append(f"a call of a function re-exported at the root is taken for its module: {line}")
    if len(got) != 2:
        failures.append(f"expected exactly 2 circles, got {got}")

    with tempfile.TemporaryDirectory() as d:
        long = os.path.join(d, "long.rs")
        open(long, "w").write("fn f() {}\n" * (MAX_LINES + 1))
        if not length_violation(long, "long.rs"):
            failures.append("a 601-line file without a reason passes")
        open(long, "w").write("//! A module.\n// Over 600 lines: one table\n" + "fn f() {}\n" * MAX_LINES)
        if length_violation(long, "long.rs"):
            failures.append("a long file with a stated reason is reported")
        open(long, "w").write("// Over 600 lines:\n" + "fn f() {}\n" * MAX_LINES)
        if not length_violation(long, "long.rs"):
            failures.append("an empty reason passes")
        exact = os.path.join(d, "exact.rs")
        open(exact, "w").write("fn f() {}\n" * MAX_LINES)
        if length_violation(exact, "exact.rs"):
            failures.append("a file of exactly 600 lines is reported")

    for f in failures:
        print("self-test: " + f)
    if not failures:
        print("self-test: ok (circles found, parent/child and comments ignored, lengths)")
    return 1 if failures else 0


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    if "--root" in sys.argv[1:]:
        root = os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
    if "--self-test" in sys.argv[1:]:
        sys.exit(self_test(root))
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} structure violation(s)", file=sys.stderr)
        sys.exit(1)
    print("structure: ok (file lengths, no import circles)")


if __name__ == "__main__":
    main()
