"""The engine's files call each other in one direction only (DESIGN.md:
no cycles between files; docs/architecture.md draws the layers). The
calls are read from the objects of libgodwit.a: a file that uses a symbol
another file defines depends on it. A cycle fails with the files in it and
one call along each edge, so the fix is where the test points."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

LIBRARY = os.environ.get("LIBGODWIT")


def symbols(archive):
    """{object: (defined, undefined)} from nm's listing of the archive: lines
    "ARCHIVE:MEMBER:[ADDRESS] KIND NAME"."""
    table = {}
    for option, index in (("--defined-only", 0), ("--undefined-only", 1)):
        out = subprocess.run(["nm", option, "-A", archive], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            member = os.path.basename(parts[0].split(":")[1])
            kind, name = parts[-2], parts[-1]
            if index == 0 and kind not in "TDRB":
                continue   # local and debug symbols say nothing about calls between files
            table.setdefault(member, (set(), set()))[index].add(name)
    return table


def dependency_graph(table):
    defined_in = {}
    for member, (defined, _) in table.items():
        for name in defined:
            defined_in[name] = member
    graph = {member: {} for member in table}
    for member, (_, undefined) in table.items():
        for name in undefined:
            target = defined_in.get(name)
            if target and target != member:
                graph[member].setdefault(target, name)
    return graph


def cycles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def short(member):
    """util_error.c.o -> util/error.c"""
    return member.removesuffix(".o").replace("_", "/", 1)


class Layers(unittest.TestCase):
    def setUp(self):
        if not LIBRARY or not os.path.exists(LIBRARY):
            self.skipTest("LIBGODWIT does not name the built libgodwit.a")

    def test_no_file_calls_back_into_a_file_that_calls_it(self):
        graph = dependency_graph(symbols(LIBRARY))
        self.assertGreater(len(graph), 20, f"too few objects read from {LIBRARY}: {graph}")
        problems = []
        for component in cycles(graph):
            edges = [f"{short(a)} -> {short(b)} ({graph[a][b]})"
                     for a in component for b in component if b in graph[a]]
            problems.append(", ".join(edges))
        self.assertEqual(problems, [], "files that call each other:\n" + "\n".join(problems))

    def test_the_checker_finds_a_cycle(self):
        graph = {"a": {"b": "f"}, "b": {"c": "g"}, "c": {"a": "h"}, "d": {"a": "i"}}
        self.assertEqual(cycles(graph), [["a", "b", "c"]])


if __name__ == "__main__":
    tap.main()
