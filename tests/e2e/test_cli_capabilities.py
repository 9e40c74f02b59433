"""The CLI as a newcomer runs it: init, capabilities list/show/manifest, demo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

CAPS = '''
from aifr import capability

@capability("shop.orders.cancel", operation="WRITE", risk="MEDIUM", version="2",
            compensation="shop.orders.restore", tags=["shop"])
def cancel(order_id: int) -> dict[str, int]:
    """Cancel an order.

    Args:
        order_id: The order to cancel.
    """
    return {"cancelled": order_id}

@capability("shop.orders.restore", operation="WRITE", risk="MEDIUM", tags=["shop"])
def restore(order_id: int) -> None:
    """Restore a cancelled order."""
'''


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_project(aifr_bin: str, tmp_path: Path, env: dict[str, str]) -> Path:
    project = tmp_path / "x"
    result = run(aifr_bin, "init", str(project), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (project / "shop_caps.py").write_text(CAPS)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["shop_caps"]')
    )
    return project


def test_init_then_capabilities_list_works_in_the_new_project(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = tmp_path / "x"
    assert run(aifr_bin, "init", str(project), cwd=tmp_path, env=clean_env).returncode == 0
    for name in ("aifr.toml", "policies", "workflows", ".aifr"):
        assert (project / name).exists()
    listing = run(aifr_bin, "capabilities", "list", cwd=project, env=clean_env)
    assert listing.returncode == 0, listing.stderr
    assert "capabilities" in listing.stdout


def test_list_shows_id_version_operation_risk_and_compensation(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env)
    listing = run(aifr_bin, "capabilities", "list", "--tag", "shop", cwd=project, env=clean_env)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "shop.orders.cancel" in line)
    for cell in ("2", "WRITE", "MEDIUM", "shop.orders.restore"):
        assert cell in row


def test_show_prints_the_spec_and_pins_versions(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env)
    shown = run(
        aifr_bin,
        "capabilities",
        "show",
        "shop.orders.cancel@2",
        "--json",
        cwd=project,
        env=clean_env,
    )
    assert shown.returncode == 0, shown.stderr
    spec = json.loads(shown.stdout)
    assert spec["input_schema"]["properties"]["order_id"]["description"] == "The order to cancel."
    missing = run(
        aifr_bin, "capabilities", "show", "shop.orders.cancel@3", cwd=project, env=clean_env
    )
    assert missing.returncode == 5
    assert "capability.version_not_found" in missing.stderr


def test_manifest_is_json_with_fingerprints(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env)
    result = run(aifr_bin, "capabilities", "manifest", cwd=project, env=clean_env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    ids = {entry["id"]: entry for entry in manifest["capabilities"]}
    assert len(ids["shop.orders.cancel"]["fingerprint"]) == 64


def test_a_broken_capability_module_is_a_clear_config_error(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env)
    (project / "shop_caps.py").write_text(
        "from aifr import capability\n"
        "@capability('bad.delete', operation='DELETE', risk='LOW')\n"
        "def f() -> None:\n    'Delete.'\n"
    )
    result = run(aifr_bin, "capabilities", "list", cwd=project, env=clean_env)
    assert result.returncode == 2
    assert "capability.risk_inconsistent" in result.stderr
    assert "DELETE operations require risk level HIGH or CRITICAL, got LOW" in result.stderr


def test_a_bad_setting_is_reported_with_its_key(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env)
    result = run(
        aifr_bin, "capabilities", "list", cwd=project, env={**clean_env, "AIFR_LOG_LEVEL": "LOUD"}
    )
    assert result.returncode == 2
    assert "config.invalid" in result.stderr
    assert "AIFR_LOG_LEVEL" in result.stderr
