import pytest

from conceptalpha.data.symbols import normalize_symbol, normalize_symbols
from conceptalpha.errors import UserError


@pytest.mark.parametrize(
    "raw,canon",
    [
        ("000001.SZ", "SZ000001"),
        ("000001", "SZ000001"),
        ("sz000001", "SZ000001"),
        ("SZ000001", "SZ000001"),
        ("600000.SH", "SH600000"),
        ("600000.SS", "SH600000"),
        (" 600519 ", "SH600519"),
        ("300750", "SZ300750"),
        ("430047", "BJ430047"),
        ("830799.BJ", "BJ830799"),
        (1, "SZ000001"),
        (600000, "SH600000"),
    ],
)
def test_normalize_symbol(raw, canon):
    assert normalize_symbol(raw) == canon


@pytest.mark.parametrize("bad", ["AAPL", "60000", "1234567", "XX600000", "", "500001", None, 3.5, "600000.HK"])
def test_unknown_forms_are_errors(bad):
    with pytest.raises(UserError, match="unrecognised symbol"):
        normalize_symbol(bad)


def test_vectorised_reports_failures():
    canon, ok = normalize_symbols(["000001.SZ", "bad", "sh600000", "bad"])
    assert ok.tolist() == [True, False, True, False]
    assert list(canon[ok]) == ["SZ000001", "SH600000"]
