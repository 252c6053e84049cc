"""DVC stage `unfold`: unfolded computational graphs, drawn from trained models' TFLite graphs.

    python -m pipelines.unfold

The unit opens with unfolding: a recurrent cell h_t = f(h_{t-1}, x_t; θ) is one cell in a loop
(rolled), or, written out over T steps, a feed-forward graph of T copies of the cell that all
read the same weights θ (unrolled). A recursive net unfolds the same way over a tree: one
application of its composition per node, children before parents, every one reading the
same weights. From the experiments `unfold.recurrent` and `unfold.tree` of params.yaml:

- the recurrent model rebuilt for T = `unfold.steps` steps, rolled (TFLite: a WHILE operator
  whose body subgraph is the cell) and unrolled (`unroll=True`: T cells in one graph), with the
  trained weights; the mask is left out (T real steps have no padding);
- the tree model unfolded over one test tree of depth `unfold.tree_depth` (`models.recursive.unfold`).

Each is converted to float32 TFLite with builtin ops and drawn from the file's own graph
(`read_graph`): operators as boxes, each weight tensor (a constant float tensor) once, in
orange, with the number of operators that read it. Writes `outputs/unfold/`: `rolled.png`,
`unrolled.png`, `tree.png` and `metrics.json` (kept in git: operator counts for T = 1..steps,
linear in T; the outputs' largest differences, unrolled against rolled and the unfolded tree
against the tree model; each weight tensor's number of readers), and in `files/` the
`.tflite` files and each graph as Graphviz `.dot` (`dot -Tsvg`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import networkx as nx
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

import models
from edge.runner import StepModel
from models.recursive import unfold as unfold_tree
from pipelines import config, datasets, paths, runtime, stage, tasks
from pipelines.exporters import tflite
from pipelines.plots import plt, save

log = logging.getLogger("archlab.unfold")
OPERATOR_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    weight: bool   # a constant float tensor: the model's parameters


@dataclass
class Subgraph:
    name: str
    operators: list[tuple[str, list[int], list[int]]]   # (kind, input tensors, output tensors)
    tensors: list[Tensor]
    inputs: list[int] = field(default_factory=list)

    def readers(self) -> dict[int, int]:
        """Each weight tensor's number of reading operators."""
        counts = {t: 0 for t, tensor in enumerate(self.tensors) if tensor.weight}
        for _, inputs, _ in self.operators:
            for t in set(inputs) & counts.keys():
                counts[t] += 1
        return {t: n for t, n in counts.items() if n}


def read_graph(content: bytes) -> list[Subgraph]:
    """The subgraphs of a TFLite flatbuffer: the main one first, then any loop bodies."""
    model = schema.Model.GetRootAsModel(content, 0)
    graphs = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        tensors = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            constant = model.Buffers(tensor.Buffer()).DataLength() > 0 or model.Buffers(tensor.Buffer()).Size() > 0
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            tensors.append(Tensor(tensor.Name().decode(), shape,
                                  constant and tensor.Type() == schema.TensorType.FLOAT32 and int(np.prod(shape)) > 1))
        operators = []
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            operators.append((kind, [int(i) for i in op.InputsAsNumpy() if i >= 0],
                              [int(i) for i in op.OutputsAsNumpy()]))
        graphs.append(Subgraph((graph.Name() or b"").decode(), operators, tensors,
                               [int(i) for i in graph.InputsAsNumpy()]))
    return graphs


def operator_count(graphs: list[Subgraph]) -> int:
    return sum(len(g.operators) for g in graphs)


def to_networkx(graph: Subgraph, groups: dict[str, str] | None = None) -> nx.DiGraph:
    """Operators and weight tensors as nodes; an edge where an operator reads what another
    wrote, or reads a weight. With `groups` ({name scope: label}), the operators whose output
    names lie in one scope are one node (a tree node's composition), with their count."""
    g = nx.DiGraph()
    writer = {t: i for i, (_, _, outputs) in enumerate(graph.operators) for t in outputs}
    readers = graph.readers()
    node = {}
    for i, (kind, _, outputs) in enumerate(graph.operators):
        name = "/" + (graph.tensors[outputs[0]].name if outputs else "")
        scope = next((s for s in (groups or {}) if re.search(rf"/{re.escape(s)}(_\d+)?/", name)), None)
        node[i] = scope or f"op{i}"
        if scope is None:
            g.add_node(node[i], label=kind, kind="operator")
        else:
            count = g.nodes[scope]["count"] + 1 if scope in g else 1
            g.add_node(scope, label=f"{groups[scope]}\n({count} operators)", kind="operator", count=count)
    for t in readers:
        g.add_node(f"w{t}", kind="weight", shape="×".join(map(str, graph.tensors[t].shape)))
    for i, (_, inputs, _) in enumerate(graph.operators):
        for t in inputs:
            if t in writer and node[writer[t]] != node[i]:
                g.add_edge(node[writer[t]], node[i])
            elif t in readers:
                g.add_edge(f"w{t}", node[i])
    for t in readers:   # readers: the operators, or the groups, that read the weight
        g.nodes[f"w{t}"]["label"] = f"weight {g.nodes[f'w{t}']['shape']}\nread ×{g.out_degree(f'w{t}')}"
    return g


def draw(graphs: list[tuple[str, Subgraph]], path: Path, title: str, dot_path: Path,
         groups: dict[str, str] | None = None) -> None:
    """Each graph left to right in the order its operators run (a node's column: its longest
    path from an input), the weights in a row beneath, into `path`; the graphs as DOT text
    into `dot_path`. `groups`: see `to_networkx`."""
    nets = [to_networkx(graph, groups) for _, graph in graphs]
    fig, axes = plt.subplots(len(graphs), 1, squeeze=False,
                             figsize=(max(8.0, 0.9 * max(_columns(g) for g in nets) + 2),
                                      sum(2.0 + 0.55 * _rows(g) for g in nets)))
    dot = []
    for ax, (caption, _), g in zip(axes[:, 0], graphs, nets):
        operators = [n for n in g if g.nodes[n]["kind"] == "operator"]
        column = {}
        for n in nx.topological_sort(g.subgraph(operators)):
            column[n] = 1 + max((column[p] for p in g.predecessors(n) if p in column), default=-1)
        rows: dict[int, int] = {}
        pos = {}
        for n in operators:
            pos[n] = (column[n], -rows.setdefault(column[n], 0))
            rows[column[n]] += 1
        weights = [n for n in g if g.nodes[n]["kind"] == "weight"]
        low = -max(rows.values(), default=1) - 1.2
        for j, n in enumerate(sorted(weights, key=lambda w: min(column[s] for s in g.successors(w)))):
            pos[n] = (min(column[s] for s in g.successors(n)) - 0.5 + 0.3 * j, low - 1.6 * (j % 3))
        flows = [e for e in g.edges if g.nodes[e[0]]["kind"] == "operator"]
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=flows, edge_color="0.3", arrows=True, arrowsize=10,
                               node_size=900, width=1.2)
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=[e for e in g.edges if e not in set(flows)],
                               edge_color="tab:orange", style="dashed", alpha=0.6, arrows=True, arrowsize=8,
                               node_size=900)
        nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=operators, node_color="#cfe2f3", node_shape="s", node_size=900)
        nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=weights, node_color="tab:orange", node_shape="D", node_size=300)
        nx.draw_networkx_labels(g, pos, ax=ax, labels={n: g.nodes[n]["label"].replace("_", "_\n", 1)
                                                       for n in operators}, font_size=5 if groups is None else 6)
        for n in weights:
            ax.annotate(g.nodes[n]["label"], pos[n], xytext=(0, -14), textcoords="offset points", ha="center",
                        va="top", fontsize=6, color="tab:orange")
        ax.set_title(caption, fontsize=9, loc="left")
        ax.axis("off")
        ax.margins(0.03, 0.12)
        dot.append(nx.nx_pydot.to_pydot(g).to_string())
    fig.suptitle(title, fontsize=10)
    save(fig, path)
    dot_path.write_text("\n".join(dot))


def _columns(g: nx.DiGraph) -> int:
    return nx.dag_longest_path_length(g) + 1 if len(g) else 1


def _rows(g: nx.DiGraph) -> int:
    return max(3, min(12, len(g) // max(_columns(g), 1) + 3))


# --- the recurrent cell, rolled and unrolled ----------------------------------------------

def recurrent_copies(trained: keras.Model, exp: config.Experiment, head, steps: int) -> tuple[keras.Model, keras.Model]:
    """A trained recurrent model rebuilt for `steps` steps and a batch of 1, rolled and
    unrolled, without the mask, with its weights."""
    hyperparameters = config.hyperparameters(exp).model_copy(update={"masking": False})
    copies = []
    for unroll in (False, True):
        copy = models.build(exp.architecture, (steps, *trained.input_shape[2:]), head,
                            hyperparameters.model_copy(update={"unroll": unroll}), batch_size=1,
                            dtype=trained.inputs[0].dtype)
        copy.set_weights(trained.get_weights())
        copies.append(copy)
    return copies[0], copies[1]


def unfold(params: config.Params) -> dict:
    settings = config.unfold(params)
    recurrent, tree_exp = params.experiments[settings.recurrent], params.experiments[settings.tree]
    runtime.setup(recurrent.seed)
    metrics: dict = {"recurrent": {"experiment": settings.recurrent, "architecture": recurrent.architecture,
                                   "steps": settings.steps},
                     "tree": {"experiment": settings.tree, "architecture": tree_exp.architecture}}
    with runtime.atomic_dir(paths.UNFOLD) as out:
        (out / "files").mkdir()
        # the recurrent cell: rolled against unrolled, on the first T steps of test sequences
        trained = stage.trained_model(settings.recurrent, float32=True)
        task = tasks.get(config.task_name(recurrent), recurrent.architecture)
        splits = datasets.load(recurrent.dataset, recurrent.training.validation_percent)
        head = task.head(splits)
        rolled, unrolled = recurrent_copies(trained, recurrent, head, settings.steps)
        x, _ = task.arrays(splits.test, limit=50)
        x = x[:, :settings.steps]
        files = {}
        for label, model in (("rolled", rolled), ("unrolled", unrolled)):
            files[label] = out / "files" / f"{label}.tflite"
            files[label].write_bytes(tflite.convert(model, "float32"))
        graphs = {label: read_graph(path.read_bytes()) for label, path in files.items()}
        edge = StepModel(files["unrolled"])
        (input_name,) = edge.inputs
        outputs = np.concatenate([edge(**{input_name: s[None]})[0] for s in x])
        expected = rolled.predict(x, verbose=0)
        metrics["recurrent"].update(
            keras_max_abs_diff=float(np.abs(unrolled.predict(x, verbose=0) - expected).max()),
            tflite_unrolled_max_abs_diff=float(np.abs(outputs - expected).max()),
            rolled_operators=operator_count(graphs["rolled"]),
            unrolled_operators_by_steps={t: operator_count(read_graph(tflite.convert(
                recurrent_copies(trained, recurrent, head, t)[1], "float32"))) if t < settings.steps
                else operator_count(graphs["unrolled"]) for t in range(1, settings.steps + 1)},
            unrolled_weight_readers=sorted(graphs["unrolled"][0].readers().values()))
        main, *loops = graphs["rolled"]
        draw([("rolled: the main graph (WHILE runs the loop)", main),
              *((f"the loop's subgraph: {g.name.rsplit('/', 1)[-1]}", g) for g in loops if "body" in g.name)],
             out / "rolled.png", f"{settings.recurrent} ({recurrent.architecture}) rolled: one cell in a loop",
             out / "files" / "rolled.dot")
        draw([(f"unrolled over T = {settings.steps} steps", graphs["unrolled"][0])], out / "unrolled.png",
             f"{settings.recurrent} ({recurrent.architecture}) unrolled: T copies of the cell, one set of weights",
             out / "files" / "unrolled.dot")

        # the tree net over one test tree
        tree_model = stage.trained_model(settings.tree, float32=True)
        tree_task = tasks.get(config.task_name(tree_exp), tree_exp.architecture)
        builder = datasets.builder(tree_exp.dataset)
        example = next(e for e in builder.as_dataset(split="test", shuffle_files=False).as_numpy_iterator()
                       if e["depth"] == settings.tree_depth and e["root"] <= settings.tree_nodes)
        nodes = np.concatenate([example["node_tokens"][:, None], example["children"]], axis=-1)
        unfolded = unfold_tree(tree_model, nodes)
        tokens = nodes[None, 1:example["root"] + 1, 0]
        reference = tree_task.predict(tree_model, nodes[None, :example["root"] + 1])
        (out / "files" / "tree.tflite").write_bytes(tflite.convert(unfolded, "float32"))
        tree_graph = read_graph((out / "files" / "tree.tflite").read_bytes())
        edge = StepModel(out / "files" / "tree.tflite")
        (input_name,) = edge.inputs
        text = " ".join(builder.VOCABULARY[t] for t in example["tokens"] if t)
        metrics["tree"].update(
            example=text, depth=int(example["depth"]), nodes=int(example["root"]), label=int(example["label"]),
            keras_max_abs_diff=float(np.abs(unfolded.predict(tokens, verbose=0) - reference).max()),
            tflite_max_abs_diff=float(np.abs(edge(**{input_name: tokens})[0] - reference).max()),
            operators=operator_count(tree_graph), weight_readers=sorted(tree_graph[0].readers().values()))
        words = [builder.VOCABULARY[t].lstrip("[") for t in example["node_tokens"][1:example["root"] + 1]]
        draw([(f"{text}  (value {example['label']}): each box one node's composition, children before parents",
               tree_graph[0])], out / "tree.png",
             f"{settings.tree} ({tree_exp.architecture}) unfolded over one tree: one composition per node, "
             "one set of weights", out / "files" / "tree.dot",
             groups={f"node{v}": f"node {v}: {word}" for v, word in enumerate(words, start=1)})
        runtime.write_json(out / "metrics.json", metrics)
    log.info("unfolded %s over %d steps and %s over a tree of %d nodes", settings.recurrent, settings.steps,
             settings.tree, example["root"])
    return metrics


def main() -> None:
    runtime.run_stage(lambda: unfold(config.load()))


if __name__ == "__main__":
    main()
