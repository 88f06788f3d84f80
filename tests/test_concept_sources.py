"""Concept source adapters on tiny hand-made files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conceptalpha.concepts.keywords import KeywordSettings, company_keywords
from conceptalpha.concepts.sources import (
    LINK_COLUMNS,
    SOURCE_KINDS,
    from_frame,
    parse_source_spec,
    read_source,
    unique_source_names,
)
from conceptalpha.errors import DataError, UserError


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def links_set(source) -> set[tuple[str, str, str]]:
    return set(zip(source.links["instrument"], source.links["concept"], source.links["kind"]))


VENDOR_FILES = {
    "tushare_concepts": (
        "id,concept_name,ts_code,name\nTS11,银行,000001.SZ,平安银行\nTS25,MSCI,000001.SZ,平安银行\nTS25,MSCI,600519.SH,贵州茅台",
        {("SZ000001", "银行", "concept"), ("SZ000001", "MSCI", "concept"), ("SH600519", "MSCI", "concept")},
    ),
    "tushare_industry": (
        "name,ts_code,industry,fullname,list_date,total_shares_10k\n平安银行,000001.SZ,银行,平安银行股份有限公司,19910403,1940591.8",
        {("SZ000001", "银行", "industry")},
    ),
    "tushare_basic": (
        "ts_code,symbol,name,area,industry,market,list_date\n000001.SZ,000001,平安银行,深圳,银行,主板,19910403\n"
        "600519.SH,600519,贵州茅台,贵州,白酒,主板,20010827",
        {("SZ000001", "银行", "industry"), ("SH600519", "白酒", "industry")},
    ),
    "eastmoney": (
        "板块代码,板块名称,股票代码,股票名称\nBK0709,赛马概念,002596,海南瑞泽\nBK0815,白酒,600519,贵州茅台",
        {("SZ002596", "赛马概念", "concept"), ("SH600519", "白酒", "concept")},
    ),
    "sina_concepts": (
        "code,name,concept\n600051,宁波联合,股权激励\n000001,平安银行,金融改革",
        {("SH600051", "股权激励", "concept"), ("SZ000001", "金融改革", "concept")},
    ),
    "sina_industry": (
        "code,name,industry\n600051,宁波联合,综合行业\n300001,特锐德,电器行业",
        {("SH600051", "综合行业", "industry"), ("SZ300001", "电器行业", "industry")},
    ),
    "profile_industry": (
        "symbol,market,co_name,industry,equity,mv,co_business,co_intro\n"
        "000001,SZ,平安银行,银行,171.7亿,-,-,text\n"
        "000001,SH,上证指数,A股指数,-,-,-,-\n"
        "300659,SZ,中孚信息,-,6120.00万,-,-,text\n"
        "600519,SH,贵州茅台,食品饮料,12.56亿,-,-,text",
        {("SZ000001", "银行", "industry"), ("SH600519", "食品饮料", "industry")},
    ),
}


@pytest.mark.parametrize("kind", sorted(VENDOR_FILES))
def test_vendor_adapter_reads_normalised_links(tmp_path, kind):
    text, expected = VENDOR_FILES[kind]
    source = read_source(kind, write_csv(tmp_path / f"{kind}.csv", text))
    assert links_set(source) == expected
    assert list(source.links.columns) == list(LINK_COLUMNS)
    assert (source.links["source"] == kind).all()
    assert source.is_snapshot


def test_profile_industry_counts_unknown_and_index_rows(tmp_path):
    text, _ = VENDOR_FILES["profile_industry"]
    source = read_source("profile_industry", write_csv(tmp_path / "p.csv", text))
    assert source.issues.rows_read == 4
    assert source.issues.dropped == {"industry unknown ('-')": 1, "market index, not a company": 1}


def test_generic_table_with_kind_and_dates(tmp_path):
    path = write_csv(
        tmp_path / "concepts.csv",
        "instrument,concept,kind,start,end\nSH600000,banks,industry,,\n600000.SH,fintech,concept,2015-01-01,2016-06-30\n"
        "sz000001,banks,industry,2012-03-01,",
    )
    links = read_source("table", path).links.set_index(["instrument", "concept"])
    assert links.loc[("SH600000", "banks"), "kind"] == "industry"
    assert links.loc[("SH600000", "fintech"), "start"] == pd.Timestamp("2015-01-01")
    assert links.loc[("SH600000", "fintech"), "end"] == pd.Timestamp("2016-06-30")
    assert pd.isna(links.loc[("SH600000", "banks"), "start"])
    assert pd.isna(links.loc[("SZ000001", "banks"), "end"])
    assert not read_source("table", path).is_snapshot


def test_generic_table_without_kind_defaults_to_concept_and_reads_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"instrument": ["SH600000", "SZ000001"], "concept": ["a", "b"]}).to_parquet(path)
    source = read_source("table", path)
    assert links_set(source) == {("SH600000", "a", "concept"), ("SZ000001", "b", "concept")}


def test_synthetic_style_frame_goes_through_the_same_path():
    frame = pd.DataFrame({"instrument": ["SH600000", "SH600001"], "concept": ["ind_0", "con_3"], "kind": ["industry", "concept"]})
    source = from_frame(frame, source="synthetic")
    assert links_set(source) == {("SH600000", "ind_0", "industry"), ("SH600001", "con_3", "concept")}
    assert (source.links["source"] == "synthetic").all()


def test_unparseable_symbols_are_counted_and_listed(tmp_path):
    path = write_csv(tmp_path / "t.csv", "instrument,concept\nSH600000,a\nXYZ,a\nXYZ,b\n12345,a\n")
    source = read_source("table", path)
    assert links_set(source) == {("SH600000", "a", "concept")}
    assert source.issues.unparsed_symbols == {"XYZ": 2, "12345": 1}
    assert source.issues.dropped["unparsed symbol"] == 3
    assert source.issues.to_dict()["unparsed_symbols"]["rows"] == 3


def test_empty_names_and_duplicates_are_counted(tmp_path):
    path = write_csv(tmp_path / "t.csv", "instrument,concept\nSH600000,a\nSH600000,a\nSH600001,\n")
    source = read_source("table", path)
    assert len(source.links) == 1
    assert source.issues.dropped == {"empty concept name": 1, "duplicate link": 1}


def test_missing_columns_name_the_file_and_columns(tmp_path):
    path = write_csv(tmp_path / "em.csv", "code,board\n600519,白酒")
    with pytest.raises(DataError, match=r"em\.csv.*missing column.*股票代码"):
        read_source("eastmoney", path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_source("tushare_concepts", tmp_path / "nope.csv")


def test_unknown_kind_lists_valid_kinds(tmp_path):
    with pytest.raises(UserError, match="unknown concept source kind 'wind'.*tushare_concepts"):
        read_source("wind", tmp_path / "x.csv")
    assert "profile_keywords" in SOURCE_KINDS and "table" in SOURCE_KINDS


def test_non_text_concept_names_are_an_error(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"instrument": ["SH600000"], "concept": [42]}).to_parquet(path)
    with pytest.raises(DataError, match="column 'concept' must hold text.*42"):
        read_source("table", path)


def test_start_after_end_is_an_error(tmp_path):
    path = write_csv(tmp_path / "t.csv", "instrument,concept,start,end\nSH600000,a,2016-01-01,2015-01-01")
    with pytest.raises(DataError, match="start after they end.*SH600000 / a"):
        read_source("table", path)


def test_bad_dates_and_bad_kinds_are_errors(tmp_path):
    with pytest.raises(DataError, match="not dates.*someday"):
        read_source("table", write_csv(tmp_path / "d.csv", "instrument,concept,start\nSH600000,a,someday"))
    with pytest.raises(DataError, match="column 'kind'.*sector"):
        read_source("table", write_csv(tmp_path / "k.csv", "instrument,concept,kind\nSH600000,a,sector"))


def test_source_spec_parsing_and_unique_names():
    assert parse_source_spec("eastmoney:/d/em.csv") == ("eastmoney", Path("/d/em.csv"))
    with pytest.raises(UserError, match="KIND:PATH"):
        parse_source_spec("eastmoney")
    assert unique_source_names(["table", "eastmoney", "table"]) == ["table", "eastmoney", "table_2"]


BUSINESS_TEXTS = {
    "SH600001": "公司主要从事白酒的生产和销售，白酒品牌知名。",
    "SH600002": "公司主营白酒酿造，白酒销售网络覆盖全国。",
    "SH600003": "公司专注白酒与葡萄酒的生产。",
    "SZ000001": "公司主营锂电池材料，锂电池正极材料产能领先。",
    "SZ000002": "公司主要产品为锂电池隔膜和锂电池电解液。",
    "SZ000003": "公司从事锂电池回收业务。",
    "SZ000004": "公司主营港口物流。",
}


def test_keywords_find_shared_business_words():
    settings = KeywordSettings(top_k=2, min_support=3, max_doc_share=0.9, stopwords=frozenset())
    table = company_keywords(list(BUSINESS_TEXTS), list(BUSINESS_TEXTS.values()), settings)
    members = table.groupby("keyword")["instrument"].apply(set).to_dict()
    assert members["白酒"] == {"SH600001", "SH600002", "SH600003"}
    assert members["锂电池"] == {"SZ000001", "SZ000002", "SZ000003"}
    assert table.groupby("instrument").size().max() <= 2
    assert set(members) <= {"白酒", "锂电池"}  # nothing else reaches a support of 3


def test_keyword_sources_are_labelled_keyword(tmp_path):
    rows = "\n".join(f"{sym},{text}" for sym, text in BUSINESS_TEXTS.items())
    path = write_csv(tmp_path / "text.csv", "instrument,text\n" + rows)
    settings = KeywordSettings(top_k=2, min_support=3, max_doc_share=0.9, stopwords=frozenset())
    source = read_source("text", path, keyword_settings=settings)
    assert set(source.links["kind"]) == {"keyword"}
    assert ("SZ000002", "锂电池", "keyword") in links_set(source)

    profile_rows = "\n".join(f"{sym[2:]},{sym[:2]},n,-,-,-,-,{text}" for sym, text in BUSINESS_TEXTS.items())
    profile = write_csv(tmp_path / "profile.csv", "symbol,market,co_name,industry,equity,mv,co_business,co_intro\n" + profile_rows)
    from_profile = read_source("profile_keywords", profile, keyword_settings=settings)
    assert links_set(from_profile) == links_set(source)
    assert (from_profile.links["source"] == "profile_keywords").all()
