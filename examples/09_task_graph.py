"""A TaskGraph: file metadata in parallel, a reduce into chunk manifests,
then a final extraction task outside the graph.

Each metadata task looks at one file. The reduce merges metadata pairwise
into manifests, lists of chunks of at most ``CHUNK_LINES`` lines, so the
reducers of one level run in parallel. The extraction task depends on the
root of the reduce tree and reads each chunk of the manifest.
"""

from __future__ import annotations

import os
import tempfile

from greenpipe.graph import TaskGraph, split_every
from greenpipe.pipeline import Pipeline, PipelineConfig, make_task

CHUNK_LINES = 400
FILE_LINES = (250, 900, 120, 640, 410, 75)


def make_inputs(folder: str) -> list[str]:
    paths = []
    for index, lines in enumerate(FILE_LINES):
        path = os.path.join(folder, f"rank-{index}.log")
        with open(path, "w", encoding="ascii") as file:
            file.writelines(f"rank {index} op {line}\n" for line in range(lines))
        paths.append(path)
    return paths


def file_metadata(scope, index: int, paths: list[str]) -> list[dict]:
    path = paths[index]
    with open(path, "rb") as file:
        lines = sum(1 for _ in file)
    chunks = [
        {"path": path, "first_line": start, "lines": min(CHUNK_LINES, lines - start)}
        for start in range(0, lines, CHUNK_LINES)
    ]
    return chunks


def merge_manifests(scope, *manifests: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for manifest in manifests:
        merged.extend(manifest)
    return merged


def extract(scope, manifest: list[dict]) -> dict:
    lines = 0
    for chunk in manifest:
        with open(chunk["path"], encoding="ascii") as file:
            for number, _line in enumerate(file):
                if chunk["first_line"] <= number < chunk["first_line"] + chunk["lines"]:
                    lines += 1
    return {"chunks": len(manifest), "lines": lines}


def main(folder: str) -> None:
    paths = make_inputs(folder)
    graph = TaskGraph.builder("index")
    metadata = graph.parallel(len(paths), lambda scope, i: file_metadata(scope, i, paths), name="metadata")
    manifest = graph.reduce(metadata, split_every(2), merge_manifests, name="manifest")
    extraction = make_task(extract, name="extract").depends_on(manifest.task())

    pipeline = Pipeline(PipelineConfig().with_name("index").with_compute_threads(2))
    summary = pipeline.set_source(graph).set_destination(extraction).execute()

    print(f"graph tasks: {len(graph.tasks())} ({len(metadata)} metadata, "
          f"{len(graph.tasks()) - len(metadata)} reducers)")
    for chunk in manifest.task().get()[:3]:
        print(f"chunk {os.path.basename(chunk['path'])} from line {chunk['first_line']}: {chunk['lines']} lines")
    print(f"extracted {summary['lines']} lines from {summary['chunks']} chunks")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        main(folder)
