"""The seed scenario: a blog whose REST API announces new articles to websocket subscribers, plus a chat.

Run it (from the repository root, or from anywhere after the README's ``editable_mode=compat`` install)::

    sandstone run --app examples.blog:app --listen tcp:8080

then open http://localhost:8080/ in a browser: the page (``examples/static/blog/``, plus what it shares with
the sensors page in ``examples/static/common/``: plain HTML, CSS and JavaScript with autobahn-js) lists the
articles, publishes new ones, shows the ``articles`` notifications as they arrive and chats on
``chat/{channel}``. Or ``POST /api/articles`` with ``{"title": "..."}`` and watch the ``articles`` topic with
any WAMP client.

Several processes behave as one server when they share a Redis (``--redis redis://127.0.0.1:6379``):
``article.created`` is forwarded, so a POST on any node reaches the ``articles`` subscribers of every node.
The article store itself is a plain dict in each process (a real app keeps articles in its database).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.static import File

from sandstone import Sandstone, Session, Topic, on_event

app = Sandstone(anonymous=True)


@dataclass(frozen=True)
class Article:
    id: int
    title: str


@dataclass(frozen=True)
class ArticleCreated:
    """Event dispatched when an article is published."""

    article: Article


_articles: dict[int, Article] = {}

PAGE = Path(__file__).resolve().parent / "static" / "blog"
COMMON = PAGE.parent / "common"  # what the blog and sensors pages share

app.forward("article.created", ArticleCreated)


def _json(request: IRequest, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def _title_from(request: IRequest) -> str | None:
    try:
        body = json.loads(request.content.read())
    except (ValueError, UnicodeDecodeError):
        return None
    title = body.get("title") if isinstance(body, dict) else None
    if not isinstance(title, str) or not title.strip():
        return None
    try:
        title.encode("utf-8")  # JSON may carry lone surrogates ("\\ud800"), which no WAMP client can read
    except UnicodeEncodeError:
        return None
    return title.strip()


@app.route("/api/articles", methods=["POST"])
async def create_article(request: IRequest) -> bytes:
    title = _title_from(request)
    if title is None:
        return _json(request, 400, {"error": 'expected a JSON object with a non-empty string "title"'})
    article = Article(id=len(_articles) + 1, title=title)
    _articles[article.id] = article
    await app.dispatch("article.created", ArticleCreated(article))
    return _json(request, 201, asdict(article))


@app.route("/api/articles", methods=["GET"])
def list_articles(request: IRequest) -> bytes:
    return _json(request, 200, [asdict(a) for a in _articles.values()])


@app.route("/api/articles/<int:article_id>", methods=["GET"])
def get_article(request: IRequest, article_id: int) -> bytes:
    article = _articles.get(article_id)
    if article is None:
        return _json(request, 404, {"error": f"no article {article_id}"})
    return _json(request, 200, asdict(article))


@app.route("/", branch=True, methods=["GET", "HEAD"])
def page(request: IRequest) -> File:
    """The page a person opens: ``index.html``, ``app.js`` and ``style.css`` from ``static/blog/``."""
    return File(str(PAGE))


@app.route("/common/", branch=True, methods=["GET", "HEAD"])
def common(request: IRequest) -> File:
    """What the page shares with the sensors page: ``base.css`` and ``live.js`` from ``static/common/``."""
    return File(str(COMMON))


@app.topic("articles")
class Articles(Topic):
    """Everyone subscribed to ``articles`` hears about each new article."""

    @on_event("article.created")
    def article_created(self, event: ArticleCreated) -> None:
        self.broadcast(
            {
                "message": f"An article has just been published: {event.article.title}",
                "article": asdict(event.article),
            }
        )


@app.topic("chat/{channel}", history=200)
class Chat(Topic):
    """A chat room per channel: a welcome for newcomers, messages relayed to the others; each channel keeps
    its last 200 messages, for the pages that come back after losing their connection."""

    def on_subscribe(self, session: Session) -> None:
        self.send(session, f"Welcome on {self.args['channel']}")
