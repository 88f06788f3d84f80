"""Main-business keyword concepts (公司主营) from free-text company descriptions.

Each company's text is segmented with jieba (part-of-speech tagged, keeping
common and specialised nouns, not place, person or organisation names, and
dropping :data:`ADMIN_STOPWORDS`), scored by TF-IDF over the whole corpus of companies, and its ``top_k``
highest-scoring words become its keywords. A keyword becomes a concept when it
is a top keyword of at least ``min_support`` companies:

    tfidf(w, d) = tf(w, d) · (ln((1 + n) / (1 + df(w))) + 1), rows L2-normalised
    keywords(d) = the top_k words of d by tfidf (ties by word)
    concept w kept  ⇔  |{d : w ∈ keywords(d)}| ≥ min_support

Words in more than ``max_doc_share`` of the documents are too generic to name a
business (公司, 有限公司…) and are left out before scoring. The result is a
distinct source kind, ``keyword``, so it is never mistaken for a vendor's board.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_NOT_A_WORD = re.compile(r"[\d\W_a-zA-Z]")

# Company-history boilerplate (registration, approvals, share issues, governance):
# frequent in the profiles' ``co_intro`` yet saying nothing about the business.
ADMIN_STOPWORDS = frozenset("""
致力于 目的 自律性 营利 公平 发字 依法 社会公众 证券 折股 全体 公众股 面值 发行股票 公积 公积金 股权 经营
职工股 办公室 总厂 工商登记 深府 外经贸 事务所 账面 商资 试点 换发 号文 领导小组 经贸 股票代码 流通 总额
大会决议 小组 定价 办公厅 股字 单位 监督 全称 工作 会计师 资产 股东大会 中文名称 创业板 外资股 年度 大会
发审 函字 外资 管理局 基准 基准日 中心 法人股 资本 重组 企股 董事会 报告 部分 职工 批字 国家 现金 评估
先生 配售 审计报告 国资 国有资产 验资 资二 会议 证书 规定 净资产值 公司法 英文 全部 基数 余额 业务 有关
国家股 主体 负债 方案 内资股 协议书 议案 监督管理 投资者 部门 工商行政 经营性 全资 登记号 政发 规范化 政体
审验 国营 总字 综合 总数 总局 报字 省政府 现名 合作 子公司 规范 情况 办字 苏体 法定代表 权益 会师 交易系统
所有制 生产经营性 政秘 试点工作 公司章程 行业 地区 代码 性质 流通股 全民 浙股 中文 机构 分局 独资 对应 地方
开业 政府 批复 人民政府 营业执照 注册资本 发起人 股本 股份 股东 有限责任 实业公司 控股集团 国有企业 资产重组
实业集团 时代 制品 创业 创业投资 开发区 技术开发 价格 销售 生产 信息 系统 网络 工程 工业 产业 经济 国际 建设
""".split())


@dataclass(frozen=True)
class KeywordSettings:
    """How keywords are chosen; see the module docstring for the formula."""

    top_k: int = 5
    min_support: int = 5
    max_doc_share: float = 0.05
    parts_of_speech: tuple[str, ...] = ("n", "nz", "vn")
    min_length: int = 2
    stopwords: frozenset[str] = ADMIN_STOPWORDS


def segment(text: str, settings: KeywordSettings) -> list[str]:
    """Words of ``text`` (jieba POS-tagged) with a kept part of speech, CJK only, ≥ min_length characters."""
    import jieba
    import jieba.posseg as pseg

    jieba.setLogLevel(logging.WARNING)
    return [
        pair.word
        for pair in pseg.cut(text)
        if pair.flag in settings.parts_of_speech
        and len(pair.word) >= settings.min_length
        and not _NOT_A_WORD.search(pair.word)
        and pair.word not in settings.stopwords
    ]


def company_keywords(instruments: Sequence[str], texts: Sequence[str], settings: KeywordSettings) -> pd.DataFrame:
    """Top keywords per company: columns instrument, keyword, score (one row per kept pair).

    ``instruments`` and ``texts`` are aligned; empty texts contribute nothing.
    Only keywords with at least ``min_support`` companies are returned.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t if isinstance(t, str) else "" for t in texts]
    has_text = np.array([bool(t.strip()) for t in texts])
    docs = [t for t, keep in zip(texts, has_text) if keep]
    empty = pd.DataFrame({"instrument": pd.Series(dtype=str), "keyword": pd.Series(dtype=str), "score": pd.Series(dtype=float)})
    if len(docs) < settings.min_support:
        return empty
    vectorizer = TfidfVectorizer(
        analyzer=lambda doc: segment(doc, settings),
        min_df=settings.min_support,
        max_df=settings.max_doc_share,
    )
    try:
        scores = vectorizer.fit_transform(docs).tocoo()
    except ValueError:  # no word survives the document-frequency limits
        return empty
    words = vectorizer.get_feature_names_out()
    pairs = pd.DataFrame({"doc": scores.row, "keyword": words[scores.col], "score": scores.data})
    pairs = pairs.sort_values(["doc", "score", "keyword"], ascending=[True, False, True], kind="stable")
    top = pairs.groupby("doc", sort=False).head(settings.top_k)
    support = top["keyword"].map(top["keyword"].value_counts())
    top = top[support >= settings.min_support]
    return pd.DataFrame({
        "instrument": np.asarray(instruments, dtype=object)[has_text][top["doc"].to_numpy()],
        "keyword": top["keyword"].to_numpy(),
        "score": top["score"].to_numpy(),
    })
