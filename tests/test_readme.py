"""The README and the guides under docs/ against the repository: links resolve, the front page keeps its first
section and its "Layout" heading, every `semvlp` command shown parses with the CLI's own parser, every make target
and `python -m` module shown exists, the quick start runs, and no sentence describes a particular machine."""

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
EXPLICIT_ANCHOR = re.compile(r"<a id=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# A `semvlp` command at the start of a line or code span (after environment assignments), or a module launch.
COMMAND = re.compile(r"(?:^|&&)\s*(?:[A-Z_]+=\S+\s+)*semvlp[ \t]+(.*)|(?:-m|--module)[ \t]+semvlp\.cli[ \t]+(.*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
# Sentences about the machine a text was written on, not about a measurement's hardware.
MACHINE_WORDS = re.compile(r"this (?:2-core |two-core |shared |GPU |CPU )?machine|\$OUT\b|\blent\b|GPU visit|"
                           r"H100 visit|first visit", re.I)


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return FENCE.sub("", text)


def code_regions(text: str) -> list[str]:
    """Each line of every fenced block (backslash continuations joined, comments dropped) and each code span."""
    regions = []
    for block in FENCE.findall(text):
        body = "\n".join(block.splitlines()[1:-1]).replace("\\\n", " ")
        regions += [re.sub(r"(^|\s)#.*$", "", line) for line in body.splitlines()]
    regions += CODE_SPAN.findall(prose(text))
    return regions


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links and code marks dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    found, seen = set(EXPLICIT_ANCHOR.findall(text)), {}
    for _, heading in HEADING.findall(prose(text)):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files_and_headings(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading or anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_readme_first_section_holds_the_two_commands():
    sections = re.split(r"^## ", prose(README.read_text(encoding="utf-8")), flags=re.M)
    assert sections[1].startswith("Two commands on a fresh machine\n")
    first = re.split(r"^## ", README.read_text(encoding="utf-8"), flags=re.M)[1]
    commands = [line.split("#")[0].strip() for block in FENCE.findall(first) for line in block.splitlines()[1:-1]]
    assert commands == ["make pretrain", "make test"]


def test_readme_keeps_the_layout_heading():
    # tests/test_layering.py's docstring points at this section by name.
    assert re.search(r"^## Layout$", README.read_text(encoding="utf-8"), re.M)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def command_errors(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """Every `semvlp` command in `text` whose subcommand or flags the parser does not know."""
    errors = []
    for region in code_regions(text):
        for match in COMMAND.finditer(region):
            words = (match.group(1) or match.group(2)).split()
            current, path = parser, ["semvlp"]
            while words and _subcommands(current):
                name = words.pop(0)
                if name == "...":
                    break
                if name not in _subcommands(current):
                    errors.append(f"{' '.join(path)} has no subcommand {name!r}: {region.strip()}")
                    break
                current, path = _subcommands(current)[name], [*path, name]
            else:
                for flag in FLAG.findall(" ".join(words)):
                    if flag not in current._option_string_actions:
                        errors.append(f"{' '.join(path)} has no option {flag}: {region.strip()}")
    return errors


@pytest.fixture(scope="module")
def cli_parser():
    from semvlp.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_semvlp_commands_shown_parse(page, cli_parser):
    assert not command_errors(page.read_text(encoding="utf-8"), cli_parser)


def test_command_check_catches_unknown_subcommands_and_flags(cli_parser):
    text = "```bash\nsemvlp pretrain --max-step 5\nsemvlp data synthesize --out x\n```\n`semvlp eval --modle m`"
    assert len(command_errors(text, cli_parser)) == 3
    assert not command_errors("`semvlp data synth --out DIR [--train N --val N]`", cli_parser)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_make_targets_and_modules_shown_exist(page):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    missing = []
    for region in code_regions(page.read_text(encoding="utf-8")):
        missing += [f"make {t}" for t in re.findall(r"(?:^|&&)\s*make ([a-z][\w-]*)", region) if t not in targets]
        missing += [m for m in re.findall(r"python -m ([\w.]+)", region) if importlib.util.find_spec(m) is None]
    assert not missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_sentence_describes_a_particular_machine(page):
    assert not MACHINE_WORDS.findall(page.read_text(encoding="utf-8"))


def quick_start_blocks() -> list[str]:
    section = re.split(r"^## ", README.read_text(encoding="utf-8"), flags=re.M)
    quick = next(s for s in section if s.startswith("Quick start\n"))
    return [block.split("\n", 1)[1].rsplit("```", 1)[0] for block in FENCE.findall(quick)
            if block.startswith("```python")]


def test_quick_start_runs_both_modes(capsys):
    exec(compile(quick_start_blocks()[0], "README.md: quick start", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["single", "two"]
    assert all("'mlm'" in line and "'itm'" in line for line in printed)


def test_quick_start_drop_in_one_liner_patches_a_bert_model(capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)
    model = transformers.BertModel(config)
    scope = {"model": model}
    exec(compile(quick_start_blocks()[1], "README.md: drop-in", "exec"), scope)
    assert scope["record"].patched
    assert "BertSelfAttention" in capsys.readouterr().out


def test_readme_plot_draws_only_providers_that_ran(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from bench import plot

    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README.read_text(encoding="utf-8"))
    assert images and all((ROOT / image).is_file() for image in images)
    results = [ROOT / "bench" / "results" / name for name in ("e2e_base_nvidia-h100-80gb-hbm3_20261127T031903Z.json",
                                                               "e2e_small_cpu_20261126T195112Z.json")]
    figures = []
    monkeypatch.setattr(plot.plt, "close", figures.append)
    plot.draw([plot.load(path) for path in results], "speedup_vs_baseline", tmp_path / "e2e.png")
    legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in figures[0].axes]
    # The files also hold torch.compile providers that did not run; they get no bar slot and no legend entry.
    assert legends == [["hf", "semvlp"], ["hf", "semvlp"]]
