"""bot.links: links for the URL tool, Discord file links kept out, the failed-links line."""

from __future__ import annotations

from bot.links import failed_line, readable_links, urls, without_discord_files


def test_links_are_found_trimmed_and_filtered() -> None:
    text = (
        "See https://a.example/x, (https://b.example/y) and <https://c.example/z>! "
        "https://en.wikipedia.org/wiki/Python_(language). Also "
        "https://cdn.discordapp.com/attachments/1/2/a.png?ex=1 and "
        "https://discord.com/channels/1/2/3 and https://a.example/x again."
    )
    assert urls(text)[:4] == [
        "https://a.example/x",
        "https://b.example/y",
        "https://c.example/z",
        "https://en.wikipedia.org/wiki/Python_(language)",
    ]
    assert readable_links(text) == urls(text)[:4]
    many = " ".join(f"https://s{i}.example" for i in range(25))
    assert len(readable_links(many)) == 20


def test_discord_file_links_become_placeholders() -> None:
    text = "look https://media.discordapp.net/attachments/1/2/My%20cat.png?width=3, ok"
    assert without_discord_files(text) == "look [Discord file: My cat.png], ok"
    assert without_discord_files("https://a.example/x") == "https://a.example/x"


def test_the_failed_links_line() -> None:
    ok = "URL_RETRIEVAL_STATUS_SUCCESS"
    assert failed_line([("https://a.example", ok)]) is None
    assert failed_line([("https://a.example", "URL_RETRIEVAL_STATUS_UNSPECIFIED")]) is None
    statuses = [("https://a.example", ok), ("https://b.example", "URL_RETRIEVAL_STATUS_ERROR")]
    assert failed_line(statuses) == "-# ⚠ Couldn't open <https://b.example>"
    many = [(f"https://{i}.example", "URL_RETRIEVAL_STATUS_PAYWALL") for i in range(7)]
    line = failed_line(many)
    assert line is not None and line.endswith(" and 2 more") and line.count("<") == 5
