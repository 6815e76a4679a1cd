"""What every graph pass needs: an index of the graph for pattern matching, and the two clean-ups
after a rewrite (topological order, unused nodes dropped)."""

from __future__ import annotations


class Graph:
    """Producer, consumers and constant values of each tensor name, for pattern matching."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):  # a node reading a tensor twice counts once
                self.consumers.setdefault(name, []).append(node)
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def op(self, name: str, op_type: str):
        """The node of type `op_type` that produces `name`, or None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def sole_consumer(self, name: str, op_type: str):
        """The one node that reads `name`, if it is of type `op_type`; else None."""
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    def consumer_of(self, name: str, op_type: str, other: str | None = None):
        """A node of type `op_type` reading `name` (and `other`, if given), or None."""
        for node in self.consumers.get(name, []):
            if node.op_type == op_type and (other is None or other in node.input):
                return node
        return None


def remove_unused(graph) -> None:
    """Drop nodes and initializers no graph output depends on (nodes in topological order)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)


def sort(graph) -> None:
    """Put the nodes in topological order (ONNX requires each after the producers of its inputs)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError("the rewritten graph has a cycle or a missing input")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)
