"""``aifr doctor``'s plugin and TLS rows, run as a user runs them, with a fix per failure.

Plugins are throwaway distributions found through their real entry points
(``plugin_kit``); TLS pairs are real PEM files, and the passing row has made a TLS 1.3
handshake with them.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aifr.api.tls import write_dev_certificate
from plugin_kit import READ_PLUGIN, aifr, make_project, manifest, write_plugin

BROKEN_PLUGIN = "raise RuntimeError('this plugin cannot start')\n"


def _rows(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_doctor_has_a_row_per_enabled_plugin_loaded_or_why_not(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(
        site,
        "doc-good",
        code=READ_PLUGIN.format(cap="docgood.answer"),
        plugin_manifest=manifest("doc-good", ["docgood.answer"]),
    )
    write_plugin(
        site, "doc-broken", code=BROKEN_PLUGIN, plugin_manifest=manifest("doc-broken", ["x.y"])
    )
    project = make_project(tmp_path / "p", enabled=["doc-good", "doc-broken", "doc-missing"])
    done = aifr(aifr_bin, project, clean_env, site, "doctor", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = _rows(done)
    good, broken, missing = (rows[f"plugin doc-{n}"] for n in ("good", "broken", "missing"))
    assert good["ok"] is True and "docgood.answer" in str(good["detail"])
    assert broken["ok"] is False
    assert "cannot start" in str(broken["detail"])
    assert "aifr plugins show doc-broken" in str(broken["fix"])
    assert missing["ok"] is False
    assert "pip install" in str(missing["fix"]) and "[plugins] enabled" in str(missing["fix"])
    table = aifr(aifr_bin, project, clean_env, site, "doctor")
    assert table.returncode == 1 and "plugin doc-broken" in table.stdout


def test_doctor_passes_with_only_working_plugins_enabled(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin(
        site,
        "doc-good",
        code=READ_PLUGIN.format(cap="docgood.answer"),
        plugin_manifest=manifest("doc-good", ["docgood.answer"]),
    )
    project = make_project(tmp_path / "p", enabled=["doc-good"])
    done = aifr(aifr_bin, project, clean_env, site, "doctor", "--json")
    assert done.returncode == 0, done.stdout
    assert _rows(done)["plugin doc-good"]["ok"] is True


def _with_tls(project: Path, cert: Path, key: Path) -> None:
    with (project / "aifr.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')


def _expired_pair(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=40))
        .not_valid_after(now - datetime.timedelta(days=10))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True)
    cert, key_path = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_path


def _tls_row(project: Path, aifr_bin: str, env: dict[str, str]) -> tuple[int, dict[str, object]]:
    done = aifr(aifr_bin, project, env, project, "doctor", "--json")
    return done.returncode, _rows(done)["TLS files"]


def test_a_valid_tls_pair_passes_after_a_real_tls13_handshake(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", enabled=[])
    status, row = _tls_row(project, aifr_bin, clean_env)
    assert status == 0 and row["ok"] is True and "not configured" in str(row["detail"])
    cert, key = write_dev_certificate(tmp_path / "tls", days=30)
    _with_tls(project, cert, key)
    status, row = _tls_row(project, aifr_bin, clean_env)
    assert status == 0, row
    assert row["ok"] is True
    assert "TLS 1.3 handshake ok" in str(row["detail"]) and "key matches" in str(row["detail"])


def test_broken_tls_files_fail_with_what_is_wrong_and_the_fix(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    cert, _ = write_dev_certificate(tmp_path / "one", days=30)
    _, other_key = write_dev_certificate(tmp_path / "two", days=30)
    old_cert, old_key = _expired_pair(tmp_path / "old")
    cases = {
        "mismatch": (cert, other_key, "is not the key of", "key the certificate was issued for"),
        "expired": (old_cert, old_key, "expired on", "renew the certificate"),
        "missing": (tmp_path / "nope.pem", other_key, "cannot read", "correct the path"),
        "not pem": (other_key, other_key, "is not a PEM certificate", "renew the certificate"),
    }
    for case, (cert_path, key_path, detail, fix) in cases.items():
        project = make_project(tmp_path / case.replace(" ", "-"), enabled=[])
        _with_tls(project, cert_path, key_path)
        status, row = _tls_row(project, aifr_bin, clean_env)
        assert status == 1, (case, row)
        assert row["ok"] is False, case
        assert detail in str(row["detail"]), (case, row)
        assert fix in str(row["fix"]), (case, row)
