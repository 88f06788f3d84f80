"""Run the real ``conceptalpha`` entry point inside a test."""

import pytest

from conceptalpha.experiments import cli


def run(args, monkeypatch, capsys):
    """Run the real entry point (error handling included); return (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["conceptalpha", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err
