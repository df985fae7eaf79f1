"""Property-based tests of the bounds on what comes in and goes out (SPEC §10, issue 13): over comments,
diffs, versions, params and URLs, nothing renders as Slack (or Markdown) markup, nothing exceeds its
bound, and no secret value appears.

Pure functions only, so each property runs without a server. The `props` profile keeps them fast and
the same on every run: at most 200 examples each, derandomized, no deadline.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote, quote_plus

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options as CmarkOptions
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from activities.common import MASK, scrub
from starter.audit import _md
from starter.config import _url
from workflows import messages, policy
from workflows.models import MAX_COMMENT, MAX_PARAM_VALUE, MAX_PARAMS, ActionInput, Cloud, StartIntent, Step
from workflows.slack_blocks import SECTION_LIMIT, fit

settings.register_profile("props", max_examples=200, derandomize=True, deadline=None, print_blob=True)
PROPS = settings.get_profile("props")

ZWSP = "\u200b"
# What would be markup in Slack if it came through: a mention, a broadcast, a link, a user group.
SLACK_MARKUP = re.compile(r"<[!@#]|<https?:|<mailto:|<[^>]*\|")
# An `&` that does not start one of the three entities slack_escape writes.
RAW_AMP = re.compile(r"&(?!amp;|lt;|gt;)")
# Text that is dense in what Slack and Markdown give meaning to, mixed with any text at all.
MARKUPISH = st.text(alphabet=st.sampled_from("`<>&!@#|*_~[]()\\:/.$\n\r ahttpsw"), max_size=80)
TEXT = st.one_of(st.text(max_size=200), MARKUPISH)
FENCED = re.compile(r"```\n(.*)\n```", re.DOTALL)


def unfence(shown: str) -> str:
    """What a person reads in a Slack code block: entities decoded, the zero-width spaces dropped."""
    return html.unescape(shown).replace(ZWSP, "")


def assert_slack_text(shown: str) -> None:
    assert not SLACK_MARKUP.search(shown), shown
    assert "<" not in shown and ">" not in shown and not RAW_AMP.search(shown), shown


# ------------------------------------------------------------------------------------------ Slack text


@PROPS
@given(TEXT)
@example("<!channel> <@U123> <https://evil|click> &lt; &")
def test_slack_escape_leaves_no_markup_and_loses_nothing(text: str):
    shown = messages.slack_escape(text)
    assert_slack_text(shown)
    assert html.unescape(shown) == text


@PROPS
@given(st.one_of(TEXT, st.text(alphabet="`a\n", max_size=40)))
@example("`````")  # five backticks: the first three were broken up, the next two and one more were not
@example("a" + "`" * 8)
def test_slack_code_cannot_end_its_block_early(text: str):
    shown = messages.slack_code(text)
    assert "```" not in shown, repr(shown)
    assert_slack_text(shown)
    assert unfence(shown) == text.replace(ZWSP, "")


@PROPS
@given(
    job=st.text(min_size=1, max_size=60),
    params=st.dictionaries(st.text(min_size=1, max_size=30), TEXT, max_size=8),
    version=st.none() | st.text(max_size=40),
    limit=st.integers(min_value=1, max_value=400),
)
def test_params_detail_is_one_code_block_of_the_params_within_its_limit(
    job: str, params: dict[str, str], version: str | None, limit: int
):
    shown = messages.params_detail(job, params, version, limit=limit)
    assert_slack_text(shown)
    assert shown.count("```") == 2  # one block, opened and closed by params_detail itself
    m = FENCED.search(shown)
    assert m is not None
    rows = "\n".join(f"{k}: {v}" for k, v in sorted(params.items())) or "(no parameters)"
    assert unfence(m.group(1)) == rows[:limit].replace(ZWSP, "")  # the params, cut at the limit
    assert ("The parameters are cut here" in shown) == (len(rows) > limit)
    assert len(fit(shown)) <= SECTION_LIMIT and fit(shown).count("```") % 2 == 0


@PROPS
@given(
    diff=st.one_of(TEXT, st.text(alphabet="`<>&\n+-~ a", max_size=600)),
    number=st.integers(min_value=1, max_value=10**6),
    url=st.sampled_from(["https://jenkins.example/job/x/7/", "http://127.0.0.1:8080/job/a&b/1/"]),
    limit=st.integers(min_value=1, max_value=500),
)
@example(diff="`````\n<!channel>", number=7, url="https://jenkins.example/job/x/7/", limit=2500)
@example(diff="<" * 2500, number=7, url="https://jenkins.example/job/x/7/", limit=2500)  # 10,000 escaped
def test_the_diff_dm_shows_the_diff_in_one_block_within_its_limit(
    diff: str, number: int, url: str, limit: int
):
    sha = "ab" * 32
    shown = messages.diff_detail(number, url, diff, sha, limit=limit)
    assert_slack_text(shown)
    assert shown.count("```") == 2
    m = FENCED.search(shown)
    assert m is not None and len(m.group(1)) <= limit  # the block's escaped text is within the limit
    kept = unfence(m.group(1))
    assert diff.replace(ZWSP, "").startswith(kept)  # a start of the diff, shown as it is
    assert ("The diff is cut here" in shown) == (len(kept) < len(diff.replace(ZWSP, "")))
    cut = fit(shown)
    assert len(cut) <= SECTION_LIMIT and cut.count("```") % 2 == 0
    # the sha256 the button binds is never lost to Slack's section cut, however long the escaping makes it
    assert f"diff sha256 `{sha}`" in cut


@PROPS
@given(TEXT)
def test_a_comment_quoted_on_github_is_one_line_of_text(text: str):
    shown = messages.github_text(text)
    assert "\n" not in shown and "\r" not in shown and "<" not in shown and not RAW_AMP.search(shown)
    assert not re.search(r"(?<![\w\u200b])@\w", shown)  # no live @mention
    assert "![" not in shown and not re.search(r"(?<!\\)[\[\]]", shown)  # no image, no link text


# ----------------------------------------------------------------------------------- the Markdown audit

GFM = ("table", "autolink", "strikethrough", "tagfilter")


def gfm_text(md: str) -> tuple[str, set[str]]:
    """The text GitHub's renderer shows for `md` and the tags it makes (raw HTML let through)."""
    out = cmarkgfm.github_flavored_markdown_to_html(md, options=CmarkOptions.CMARK_OPT_UNSAFE)
    tags = set(re.findall(r"<(\w+)", out))
    return html.unescape(re.sub(r"<[^>]*>", "", out)).strip("\n"), tags


def expected_text(value: str) -> str:
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").strip()


# cmark turns NUL into U+FFFD and strips a line's leading and trailing blanks on its own terms; those
# are not markup, so the round trip is checked on text without them.
MD_TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=60),
    st.text(alphabet=st.sampled_from("`<>&!@#|*_~[]()\\:/.$+-=^ahtpsw. \n"), max_size=60),
).filter(lambda v: expected_text(v) != "")


@PROPS
@given(MD_TEXT)
@example("x](https://evil.example) <img src=x>")
@example("a@b.co www.evil.example https://evil.example _x_ *y* `z` ~~s~~ [^1] #")
def test_an_audit_value_renders_in_markdown_as_exactly_itself(value: str):
    md = _md(value)
    assert "\n" not in md and "<" not in md
    # In a list item, as the audit's header lines have them.
    text, tags = gfm_text(f"- value: {md}")
    assert tags <= {"ul", "li", "code"}, (md, tags)
    assert text == f"value: {expected_text(value)}", md
    # In a table cell, between two fixed cells: still three cells, the middle one the value.
    text, tags = gfm_text(f"| a | b | c |\n|---|---|---|\n| x | {md} | y |")
    assert tags <= {"table", "thead", "tbody", "tr", "th", "td", "code"}, (md, tags)
    assert text.split("\n")[-3:] == ["x", expected_text(value), "y"], md


# ---------------------------------------------------------------------------- versions, comments, params

VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}")


def start_refusal(version: str | None, cloud: Cloud = Cloud.COM) -> str | None:
    return policy.start_refusal(cloud, False, version, "payments-api", "U1", ("U1",))


@PROPS
@given(st.one_of(st.from_regex(VERSION, fullmatch=True), st.text(max_size=140)))
@example("1.2.3\n")
@example("1.2.3 # pinned")
@example('1.2.3"')
@example("-rc1")
def test_a_version_is_taken_only_when_it_is_plain(version: str):
    refusal = start_refusal(version)
    if VERSION.fullmatch(version):
        assert refusal is None
    else:
        assert refusal is not None and "\n" not in refusal and repr(version[:40]) in refusal


def test_a_gov_deploy_still_needs_a_version():
    assert start_refusal(None) is None and start_refusal("1.4.2", Cloud.GOV) is None
    assert "needs --version" in (start_refusal(None, Cloud.GOV) or "")


@PROPS
@given(comment=st.text(max_size=MAX_COMMENT + 50))
def test_a_comment_is_bounded(comment: str):
    try:
        msg = ActionInput(actor="U1", step=Step.PCCR_REVIEW, comment=comment)
    except ValidationError as err:
        assert len(comment) > MAX_COMMENT and err.error_count() == 1
    else:
        assert len(comment) <= MAX_COMMENT and msg.comment == comment


@pytest.mark.parametrize(
    "extra",
    [{"role": "vp"}, {"identity": "ssh:x"}, {"accepted": True}, {"comment ": "x"}],
)
def test_an_action_carries_nothing_but_its_fields(extra: dict[str, object]):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ActionInput.model_validate({"actor": "U1", "step": "pccr_review", **extra})


@PROPS
@given(
    params=st.dictionaries(
        st.text(max_size=210), st.text(max_size=40) | st.just("v" * (MAX_PARAM_VALUE + 1)), max_size=6
    )
)
def test_params_are_bounded(params: dict[str, str]):
    ok = all(0 < len(k) <= 200 and len(v) <= MAX_PARAM_VALUE for k, v in params.items())
    intent = {"process": "oow", "service": "s", "environment": "e", "actor": "U1", "params": params}
    try:
        StartIntent.model_validate(intent)
    except ValidationError as err:
        assert not ok and "\n" not in str(err.errors()[0]["msg"])
    else:
        assert ok


def test_no_more_than_max_params():
    intent = {"process": "oow", "service": "s", "environment": "e", "actor": "U1"}
    StartIntent.model_validate({**intent, "params": {f"p{i}": "" for i in range(MAX_PARAMS)}})
    with pytest.raises(ValidationError):
        StartIntent.model_validate({**intent, "params": {f"p{i}": "" for i in range(MAX_PARAMS + 1)}})


# ------------------------------------------------------------------------------------------------ URLs

HOST = st.sampled_from(
    [
        "jenkins.example",
        "10.0.0.5",
        "[2001:db8::1]",
        "127.0.0.1",
        "127.8.9.10",
        "[::1]",
        "localhost",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
    ]
)
LOOPBACK = {"127.0.0.1", "127.8.9.10", "[::1]", "localhost"}
USERINFO = st.sampled_from(["", "usr7q@", "usr7q:tok9z@", ":tok9z@", "u%40x:p@ss9z@", "@"])


@PROPS
@given(
    scheme=st.sampled_from(["https", "http", "HTTP", "ftp", "file", "javascript"]),
    userinfo=USERINFO,
    host=HOST,
    port=st.sampled_from(["", ":8080", ":443"]),
    path=st.sampled_from(["", "/", "/jenkins/", "/a?b=c#d"]),
)
def test_a_url_is_refused_with_credentials_and_plain_http_off_loopback(
    scheme: str, userinfo: str, host: str, port: str, path: str
):
    url = f"{scheme}://{userinfo}{host}{port}{path}"
    secret = userinfo.rstrip("@")
    ok = (
        scheme.lower() in ("http", "https")
        and not userinfo
        and (scheme.lower() == "https" or host in LOOPBACK)
    )
    try:
        assert _url(url, "the token comes from the environment") == url
    except ValueError as err:
        line = str(err)
        assert not ok, line
        assert "\n" not in line
        if len(secret) > 1:  # the refusal never echoes the user name or password
            assert secret not in line, line
    else:
        assert ok, url


# ----------------------------------------------------------------------------------------------- scrub

SECRET_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")


@PROPS
@given(
    secrets=st.lists(st.text(SECRET_CHARS, min_size=1, max_size=20), min_size=1, max_size=3),
    pieces=st.lists(st.text(max_size=20), min_size=1, max_size=4),
    forms=st.lists(st.sampled_from(["plain", "quote", "quote_all", "plus", "lower"]), min_size=1, max_size=4),
)
def test_scrub_leaves_no_secret_in_any_form(secrets: list[str], pieces: list[str], forms: list[str]):
    encode = {
        "plain": lambda s: s,
        "quote": quote,
        "quote_all": lambda s: quote(s, safe=""),
        "plus": quote_plus,
        "lower": lambda s: quote(s, safe="").lower(),
    }
    text = ""
    for i, piece in enumerate(pieces):
        text += piece + encode[forms[i % len(forms)]](secrets[i % len(secrets)])
    out = scrub(text, secrets)
    for secret in secrets:
        if secret in MASK:
            continue
        assert secret not in out and quote(secret, safe="") not in out and quote_plus(secret) not in out
        assert quote(secret) not in out
