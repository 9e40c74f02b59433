"""Reading a workflow file's YAML without the format's traps.

``yaml.safe_load`` runs no code, but it quietly keeps the last of two equal keys (a
second ``name:`` or ``steps:`` wins, and the first one's steps are gone), expands aliases
without limit (a "billion laughs" file of a few hundred bytes becomes billions of
values, and validating them never ends), builds structures that contain themselves,
and fails with ``RecursionError`` on deep nesting. The YAML is composed into nodes
first, checked, and only then constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

from aifr.errors import WorkflowError

__all__ = ["MAX_VALUES", "read_yaml"]

MAX_VALUES = 200_000
"""The most values a workflow file may hold once its aliases are expanded."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_yaml(text: str, source: str) -> Any:
    """The data of one YAML document, checked for repeated keys and runaway aliases.

    Raises:
        WorkflowError: ``workflow.invalid`` naming ``source`` and, for a repeated key,
            its line.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Check(source).size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{source}: invalid YAML: {exc}", file=source) from None
    except RecursionError:
        raise WorkflowError(f"{source}: invalid YAML: nested too deeply", file=source) from None
    finally:
        loader.dispose()


class _Check:
    """One walk over the nodes: repeated keys, self-reference, and the expanded size."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[int, int] = {}  # an alias is the same node: counted once, reused
        self.open: set[int] = set()

    def size(self, node: yaml.Node) -> int:
        """How many values ``node`` stands for once every alias in it is expanded."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in self.open:
            raise self._error(node, "an alias refers to a value that contains it")
        self.open.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            self._no_repeated_keys(node)
            total += sum(self.size(k) + self.size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(self.size(item) for item in node.value)
        self.open.discard(id(node))
        if total > MAX_VALUES:
            raise self._error(
                node, f"aliases expand it to over {MAX_VALUES} values (a 'billion laughs' file?)"
            )
        self.sizes[id(node)] = total
        return total

    def _no_repeated_keys(self, node: yaml.MappingNode) -> None:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            identity = (key.tag, key.value)
            if identity in seen:
                raise self._error(key, f"key {key.value!r} is repeated in one mapping")
            seen.add(identity)

    def _error(self, node: yaml.Node, problem: str) -> WorkflowError:
        line = node.start_mark.line + 1
        return WorkflowError(
            f"{self.source}: invalid YAML: line {line}: {problem}", file=self.source, line=line
        )
