"""ChunkPlanner: code-aware cuts, bounded sizes, line ranges, hashes, determinism."""

from __future__ import annotations

import hashlib

from aifr.ingest.chunk import ChunkLimits, ChunkPlanner
from aifr.ingest.structure import language_for

SMALL = ChunkLimits(target_lines=8, max_lines=12, max_chars=2000, overlap_lines=2)


def _function(name: str, body_lines: int) -> str:
    body = "".join(f"    x_{i} = {i}\n" for i in range(body_lines))
    return f"def {name}():\n{body}    return 0\n"


def _starts(chunks: list, text: str) -> list[str]:  # type: ignore[type-arg]
    lines = text.splitlines()
    return [lines[c.start_line - 1] for c in chunks]


def test_python_is_cut_at_function_and_class_boundaries() -> None:
    text = (
        "import os\n\n\n"
        + _function("alpha", 5)
        + "\n\n"
        + _function("beta", 5)
        + "\n\nclass Gamma:\n    pass\n"
    )
    chunks = ChunkPlanner(SMALL).plan("r", "m.py", text)
    starts = _starts(chunks, text)
    assert "def alpha():" in starts and "def beta():" in starts
    assert all(c.language == "python" for c in chunks)
    for chunk in chunks:  # no function is cut in two
        assert chunk.text.count("def ") == chunk.text.count("return 0")


def test_a_comment_and_decorator_above_a_function_stay_with_it() -> None:
    text = _function("a", 6) + "\n# explains b\n@decorator\n" + _function("b", 6)
    chunks = ChunkPlanner(SMALL).plan("r", "m.py", text)
    holding_b = next(c for c in chunks if "def b" in c.text)
    assert holding_b.text.startswith("# explains b\n@decorator\n")


def test_big_python_class_is_split_at_its_methods() -> None:
    methods = "".join(
        f"    def m{i}(self):\n" + "".join(f"        v = {j}\n" for j in range(6)) for i in range(6)
    )
    text = "class Big:\n" + methods
    chunks = ChunkPlanner(SMALL).plan("r", "big.py", text)
    assert len(chunks) > 1
    assert all(c.end_line - c.start_line + 1 <= SMALL.max_lines for c in chunks)
    for chunk in chunks:
        assert chunk.text.count("def m") >= 1
        assert chunk.text.count("def m") * 6 == chunk.text.count("v = ")


def test_huge_function_is_split_into_bounded_windows() -> None:
    text = _function("huge", 200)
    chunks = ChunkPlanner(SMALL).plan("r", "h.py", text)
    assert len(chunks) > 10
    assert all(c.end_line - c.start_line + 1 <= SMALL.max_lines for c in chunks)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 202


def test_brace_languages_are_cut_at_top_level_declarations() -> None:
    go = (
        "package main\n\nfunc A() {\n"
        + '\tx := "}"\n' * 6
        + "}\nfunc B() {\n\ty := '{'\n"
        + "\tz()\n" * 6
        + "}\n"
    )
    chunks = ChunkPlanner(SMALL).plan("r", "main.go", go)
    starts = _starts(chunks, go)
    assert "func B() {" in starts
    assert all(c.language == "go" for c in chunks)


def test_rust_lifetimes_and_raw_strings_do_not_confuse_the_brace_scanner() -> None:
    rust = (
        "fn first<'a>(s: &'a str) -> &'a str {\n" + '    let r = r#"{{{"#;\n' * 6 + "    s\n}\n"
        "\nfn second() {\n" + "    let c = '}';\n" * 6 + "}\n"
    )
    chunks = ChunkPlanner(SMALL).plan("r", "lib.rs", rust)
    assert "fn second() {" in _starts(chunks, rust)


def test_java_class_too_big_is_split_at_its_methods() -> None:
    methods = "".join(
        f"    /** doc {i} */\n    public int m{i}() {{\n"
        + "        int a = 1; // }\n" * 5
        + "        return a;\n    }\n\n"
        for i in range(5)
    )
    java = "public class Big {\n" + methods + "}\n"
    chunks = ChunkPlanner(SMALL).plan("r", "Big.java", java)
    assert len(chunks) > 1
    opened = [c for c in chunks if "public int m" in c.text]
    assert all(c.text.count("public int m") == c.text.count("return a;") for c in opened)


def test_typescript_template_literals_with_braces_are_skipped() -> None:
    ts = (
        "export function a(): string {\n  return `${x} {{{`;\n}\n"
        + "\n".join(f"export const v{i} = {{ k: {i} }};" for i in range(14))
        + "\n"
    )
    chunks = ChunkPlanner(SMALL).plan("r", "a.ts", ts)
    assert _starts(chunks, ts)[:2] == [
        "export function a(): string {",
        "export const v0 = { k: 0 };",
    ]
    assert chunks[0].language == "typescript"


def test_markdown_is_cut_at_headings_outside_code_fences() -> None:
    md = (
        "# Title\nintro\n\n## Install\n"
        + "step\n" * 5
        + "```sh\n# not a heading\n```\n\n## Use\n"
        + "text\n" * 5
    )
    chunks = ChunkPlanner(ChunkLimits(target_lines=6, max_lines=12)).plan("r", "README.md", md)
    starts = _starts(chunks, md)
    assert "## Use" in starts and "# not a heading" not in starts


def test_plain_text_windows_overlap() -> None:
    text = "".join(f"line {i}\n" for i in range(30))
    chunks = ChunkPlanner(SMALL).plan("r", "notes.txt", text)
    assert chunks[0].language == "text"
    assert [(c.start_line, c.end_line) for c in chunks][:2] == [(1, 12), (11, 22)]


def test_character_cap_holds_and_a_giant_line_is_cut_into_pieces() -> None:
    limits = ChunkLimits(target_lines=40, max_lines=60, max_chars=500, overlap_lines=0)
    text = "a = 1\n" + "x" * 1800 + "\nb = 2\n"
    chunks = ChunkPlanner(limits).plan("r", "min.js", text)
    assert all(len(c.text) <= 500 for c in chunks)
    assert "".join(c.text for c in chunks if c.start_line == 2) == "x" * 1800 + "\n"


def test_chunks_record_path_lines_language_and_content_hash() -> None:
    text = _function("one", 2)
    (chunk,) = ChunkPlanner().plan("repo", "pkg/mod.py", text)
    assert (chunk.repo, chunk.path, chunk.start_line, chunk.end_line) == (
        "repo",
        "pkg/mod.py",
        1,
        4,
    )
    assert chunk.content_hash == hashlib.sha256(chunk.text.encode()).hexdigest()


def test_planning_is_deterministic() -> None:
    text = "\n\n".join(_function(f"f{i}", i % 9) for i in range(40))
    planner = ChunkPlanner(SMALL)
    assert planner.plan("r", "d.py", text) == planner.plan("r", "d.py", text)


def test_python_with_a_syntax_error_falls_back_to_line_windows() -> None:
    text = "def broken(:\n" + "pass\n" * 30
    chunks = ChunkPlanner(SMALL).plan("r", "bad.py", text)
    assert chunks and all(c.end_line - c.start_line + 1 <= SMALL.max_lines for c in chunks)


def test_blank_file_has_no_chunks() -> None:
    assert ChunkPlanner().plan("r", "empty.py", "\n\n  \n") == []


def test_language_comes_from_the_suffix_of_an_archive_member_too() -> None:
    assert language_for("vendor/lib.zip!/src/app.tsx") == "typescript"
    assert language_for("Makefile") == "text"


def test_pathologically_deep_nesting_is_cut_into_windows_without_recursing_forever() -> None:
    depth = 3000
    text = "if (x) {\n" * depth + "}\n" * depth
    chunks = ChunkPlanner(SMALL).plan("r", "deep.js", text)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 2 * depth
    assert all(c.end_line - c.start_line + 1 <= SMALL.max_lines for c in chunks)


def test_line_numbers_count_newlines_only_as_editors_do() -> None:
    text = "# page one\x0c\n\n\ndef after_form_feed():\n    return '\u2028'\n"
    (chunk,) = ChunkPlanner().plan("r", "ff.py", text)
    assert (chunk.start_line, chunk.end_line) == (1, 5)
    crlf = "a = 1\r\nb = 2\r\n"
    (chunk,) = ChunkPlanner().plan("r", "w.py", crlf)
    assert (chunk.start_line, chunk.end_line, chunk.text) == (1, 2, crlf)
