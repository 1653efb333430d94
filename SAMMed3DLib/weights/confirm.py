"""Google Drive's "can't scan this file for viruses" page: find the URL that confirms the download.

For large files Drive answers a download request with an HTML page instead of the file. Depending on
the endpoint the page holds a form (``drive.usercontent.google.com/download`` with hidden ``id``,
``export``, ``confirm``, ``uuid`` inputs), a link carrying ``confirm=<token>``, or the token sits in a
``download_warning…`` cookie. Any of these gives the URL to request next.
"""

from html.parser import HTMLParser
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit


class _PageParser(HTMLParser):
    """Collects forms (action and hidden inputs) and links of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: List[Tuple[str, Dict[str, str]]] = []
        self.links: List[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def with_query(url: str, extra: Mapping[str, str]) -> str:
    """``url`` with the query parameters in ``extra`` added or replaced."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(extra)
    return urlunsplit(parts._replace(query=urlencode(query)))


def confirm_url(page: str, page_url: str, cookies: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The URL that fetches the file behind a Drive confirmation page, or None if the page is something else."""
    parser = _PageParser()
    parser.feed(page)
    for action, inputs in parser.forms:
        if "confirm" in inputs or "id" in inputs or "confirm=" in action:
            return with_query(urljoin(page_url, action or page_url), inputs)
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(page_url, href)
    for name, value in (cookies or {}).items():
        if name.startswith("download_warning"):
            return with_query(page_url, {"confirm": value})
    return None
