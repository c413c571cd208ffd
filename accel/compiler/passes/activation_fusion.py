"""Activation fusion: a ReLU / ReLU6 / Clip becomes the clamp epilogue of the Conv, Dense,
Add, Affine (or other activation) that produces its input.

Unsafe when the producer's output is also read elsewhere (the other readers need the value
before the clamp: not matched) or when the two clamps' ranges are disjoint (not matched).
"""

from __future__ import annotations

from .. import ir

FUSABLE = (ir.Conv, ir.Dense, ir.Add, ir.Affine, ir.Activation)


def match(graph: ir.Graph) -> list[tuple[ir.Node, ir.Activation]]:
    producers, users = graph.producers(), graph.consumers()
    matches, taken = [], set()
    for act in graph.nodes:
        if not isinstance(act, ir.Activation) or id(act) in taken:
            continue
        producer = producers.get(act.x)
        if (isinstance(producer, FUSABLE) and id(producer) not in taken
                and len(users[act.x]) == 1 and act.x not in graph.outputs
                and producer.clamp.then(act.clamp) is not None):
            matches.append((producer, act))
            taken.update((id(producer), id(act)))
    return matches


def apply(graph: ir.Graph, m: tuple[ir.Node, ir.Activation]) -> None:
    producer, act = m
    producer.clamp = producer.clamp.then(act.clamp)
    graph.take_output(producer, act)
