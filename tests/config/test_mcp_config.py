"""`mcp:` providers (SPEC §8) in providers.yaml: what loads, and the errors that name the line."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import load

from .support import error_of, minimal, write


def test_an_mcp_server_needs_no_client_id_nor_endpoints(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            "providers:\n"
            "  linear:\n"
            "    mcp: https://mcp.linear.app/mcp\n"
            "  tools:\n"
            "    mcp: http://127.0.0.1:8000/mcp\n"
            "    client_metadata_url: https://example.com/client.json\n"
            "    scopes: [read]\n"
        ),
    )
    desired = load(path, environ={})
    linear, tools = desired.providers["linear"], desired.providers["tools"]
    assert linear.mcp == "https://mcp.linear.app/mcp"
    assert linear.client_id == "" and linear.flow == "authorization_code"
    assert linear.token_endpoint is None and linear.scopes == ()
    assert tools.client_metadata_url == "https://example.com/client.json"
    assert tools.scopes == ("read",)


def test_without_mcp_a_client_id_is_still_required(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("providers:\n  api:\n    issuer: https://a.example\n"))
    assert "missing required key `client_id`" in str(error_of(path))


def test_an_mcp_url_must_be_https_off_loopback(tmp_path: Path) -> None:
    path = write(tmp_path, minimal("providers:\n  tools:\n    mcp: http://mcp.example.com/mcp\n"))
    text = str(error_of(path))
    assert ":6:" in text and "$.providers.tools.mcp" in text and "https" in text


def test_client_metadata_url_needs_mcp(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            "providers:\n  api:\n    issuer: https://a.example\n    client_id: x\n"
            "    client_metadata_url: https://example.com/client.json\n"
        ),
    )
    assert "client_metadata_url is used only with `mcp`" in str(error_of(path))


def test_an_mcp_server_is_linked_with_the_code_flow_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal(
            "providers:\n  tools:\n    mcp: https://mcp.example.com/mcp\n    flow: device_code\n"
        ),
    )
    assert "flow `device_code` is not available for an MCP server" in str(error_of(path))
