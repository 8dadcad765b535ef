"""Planning poker: rooms where a team estimates a task, each player laying a card face down until someone
reveals them all.

Run it (from the repository root, or from anywhere after the README's ``editable_mode=compat`` install)::

    sandstone run --app examples.poker:app --listen tcp:8080

then open http://localhost:8080/ in two browser windows: create a room in one, open its link in the other
(the page is ``examples/static/poker/``, plus ``examples/static/common/``). ``POST /api/rooms`` with
``{"name": "..."}`` creates a room (201, its id, and ``Location: /api/rooms/<id>``), ``GET /api/rooms/<id>``
reads it.

**Players.** A player connects with WAMP ticket authentication: its ``authid`` is the name it plays under
(the ticket is not checked: this is a table among colleagues, not a bank), so presence (``await
self.presence()``, ``on_join``/``on_leave``) names the people in a room with nothing else to keep, on every
node. Players subscribe to ``poker/{room}`` with ``get_retained``: the retained event is the room's state, so
a late joiner sees the round at once. They act by publishing on it (the topic turns each publication into a
change, it never relays it): ``{"action": "vote", "round": 3, "card": "5"}``, ``{"action": "reveal",
"round": 3}``, ``{"action": "new_round", "round": 3}``. Every action names the round it was meant for, so a
click on a round that is over is refused, and two "new round" clicks make one new round. The topic keeps a
history of 200 events: a player that reconnects asks ``wamp.subscription.get_events`` for what it missed.

**One state on every node.** The obvious design, read the retained state, change it, retain it again, loses
votes with ``--redis``: two nodes handling two votes at once both read the state without either vote, and
the second write wins. Here each node holds a copy of each room it heard of, and the room state is a small
CRDT: ``merge`` is commutative, associative and idempotent (the later round wins; in one
round, "revealed" once is revealed for good, and each player's vote is the one with the higher version, the
card breaking a tie). An action reads the node's copy merged with the stored state, applies itself and
dispatches the new state as the forwarded event ``poker.room``; every node merges it into its copy and
broadcasts what it now knows, under the event's cause, so that each subscriber gets one copy of it: the
public view on ``poker/{room}`` (cards hidden until revealed) and the whole state on ``poker.state.{room}``,
both retained (every node reads retained events from Redis). Two votes cast on two nodes at the same moment
are two versions of the room that each lack the other's vote; each node merges both as they arrive, so no
vote is lost: each node's last retained write holds everything it heard, and the pages merge the states
they receive the same way. A node that starts later (or forgot a room) reads the retained whole state.
Nobody but the app may subscribe or publish to ``poker.state.*`` (the authorizer says no): it holds the
cards before they are revealed.

Rooms last as long as the cluster's store keeps their retained events (``Limits.max_retained_topics``,
the least recently changed first); a real app would keep them in its database.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.static import File

from sandstone import Credentials, Identity, Member, Publication, Sandstone, Session, Topic, WampError

log = Logger()

app = Sandstone()

PAGE = Path(__file__).resolve().parent / "static" / "poker"
COMMON = PAGE.parent / "common"  # what the poker, blog and sensors pages share

CARDS = ("0", "1", "2", "3", "5", "8", "13", "20", "40", "100", "?")
ROOM_ID = r"[0-9a-f]{12}"
HISTORY = 200  # events each room's topic keeps for players coming back
MAX_NAME = 40  # a player's name
MAX_ROOM_NAME = 80
NAME_PUNCTUATION = frozenset(" _.'-")
CACHED_ROOMS = 10_000  # rooms each node keeps a copy of (the least recently changed are dropped first)

NO_SUCH_ROOM = "poker.error.no_such_room"
INVALID_ACTION = "poker.error.invalid_action"
ROUND_OVER = "poker.error.round_over"
REVEALED = "poker.error.revealed"
UNAVAILABLE = "poker.error.unavailable"


def room_uri(room_id: str) -> str:
    """The topic of a room: its players' presence, its public state, their actions."""
    return f"poker/{room_id}"


def state_uri(room_id: str) -> str:
    """Where the whole state of a room (the cards before the reveal too) is retained, for the app only."""
    return f"poker.state.{room_id}"


STATE_PREFIX = state_uri("")


# the room state


@dataclass(frozen=True)
class Vote:
    """A player's card in a round; ``version`` counts that player's votes in the round (the later wins)."""

    card: str
    version: int = 1

    def __post_init__(self) -> None:
        if self.card not in CARDS:
            raise ValueError(f"{self.card!r} is no card")
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"a vote's version is a positive integer, not {self.version!r}")


@dataclass(frozen=True)
class Room:
    """A room's state: its round, whether the round's cards are revealed, and each player's vote."""

    id: str
    name: str
    round: int = 1
    revealed: bool = False
    votes: dict[str, Vote] = field(default_factory=dict)

    def __post_init__(self) -> None:  # a room may come from the bus or the store: check what it holds
        if not isinstance(self.id, str) or not isinstance(self.name, str):
            raise TypeError("a room's id and name are strings")
        if type(self.round) is not int or self.round < 1:
            raise ValueError(f"a round is a positive integer, not {self.round!r}")
        if type(self.revealed) is not bool:
            raise TypeError(f"revealed is true or false, not {self.revealed!r}")
        if not all(isinstance(name, str) and isinstance(vote, Vote) for name, vote in self.votes.items()):
            raise TypeError("a room's votes map player names to votes")


@dataclass(frozen=True)
class RoomChanged:
    """The forwarded event: a room's new state, what changed it and who (a player's name)."""

    room: Room
    what: str
    by: str = ""


app.forward("poker.room", RoomChanged)


def merge(a: Room, b: Room) -> Room:
    """What two versions of a room know together, whatever order they come in: the later round wins
    whole; in one round a reveal stays, and each player's vote is the one with the higher version (the
    higher card when two nodes counted the same version)."""
    if a.round != b.round:
        return a if a.round > b.round else b
    votes = dict(a.votes)
    for player, vote in b.votes.items():
        known = votes.get(player)
        if known is None or (vote.version, vote.card) > (known.version, known.card):
            votes[player] = vote
    return Room(a.id, a.name, a.round, a.revealed or b.revealed, votes)


def average(room: Room) -> float | None:
    """The mean of the numeric cards to one decimal (half up, as the page rounds), or ``None``."""
    numbers = [int(vote.card) for vote in room.votes.values() if vote.card.isdigit()]
    if not numbers:
        return None
    return math.floor(sum(numbers) / len(numbers) * 10 + 0.5) / 10


def public_view(room: Room) -> dict[str, Any]:
    """What players see of a room: who voted, and the cards and their average once revealed."""
    votes = {
        player: {"version": vote.version, "card": vote.card} if room.revealed else {"version": vote.version}
        for player, vote in sorted(room.votes.items())
    }
    return {
        "id": room.id,
        "name": room.name,
        "round": room.round,
        "revealed": room.revealed,
        "votes": votes,
        "average": average(room) if room.revealed else None,
    }


def room_from_json(data: Any) -> Room | None:
    """A room from its stored JSON form (``None`` for none, or for something that is no room)."""
    if data is None:
        return None
    try:
        fields = dict(data)  # the store's own copy: not to be changed
        votes = {player: Vote(**vote) for player, vote in fields.pop("votes").items()}
        return Room(**fields, votes=votes)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warn("poker: a stored room state is not one ({error}): ignored", error=exc)
        return None


# each node's copy of the rooms

_rooms: OrderedDict[str, Room] = OrderedDict()


def remember(room: Room) -> Room:
    """Merge ``room`` into this node's copy; returns the copy."""
    known = _rooms.pop(room.id, None)
    merged = room if known is None else merge(known, room)
    _rooms[room.id] = merged
    while len(_rooms) > CACHED_ROOMS:
        _rooms.popitem(last=False)
    return merged


async def current(room_id: str) -> Room | None:
    """A room as this node knows it, merged with the state the cluster stores (``None``: no such room).
    Raises ``WampError(UNAVAILABLE)`` when the store cannot be read (Redis unreachable, or not yet)."""
    try:
        found = await app.retained(state_uri(room_id))
    except Exception as exc:  # whatever the store raised: the answer is the same, try again later
        log.warn("poker: cannot read the state of room {room}: {error}", room=room_id, error=exc)
        raise WampError(UNAVAILABLE, "the rooms cannot be read right now: try again in a moment") from None
    stored = room_from_json(found)
    if stored is not None:
        return remember(stored)
    return _rooms.get(room_id)


@app.on_event("poker.room")
def room_changed(event: RoomChanged) -> None:
    """On every node: merge the new state, then broadcast (and retain) what this node knows of the room.

    Run under the forwarded event's cause, both broadcasts reach each subscriber once; each node's
    retained write holds what it knows, so the last one to reach the store holds every change.
    """
    room = remember(event.room)
    app.broadcast(state_uri(room.id), asdict(room), retain=True)
    change = {"what": event.what, "by": event.by, "round": event.room.round}
    app.broadcast(room_uri(room.id), {"type": "state", **public_view(room), "change": change}, retain=True)


# actions


def _check_round(room: Room, action: dict[str, Any]) -> int:
    meant = action.get("round")
    if type(meant) is not int:
        raise WampError(INVALID_ACTION, 'an action names its round: {"round": 3, ...}')
    if meant != room.round:
        raise WampError(ROUND_OVER, f"the room plays round {room.round}, not round {meant}")
    return meant


def vote(room: Room, player: str, action: dict[str, Any]) -> Room | None:
    """Lay a card (or change it) in the current round, until the cards are revealed."""
    card = action.get("card")
    if card not in CARDS:
        raise WampError(INVALID_ACTION, f"a vote's card is one of {', '.join(CARDS)}, not {card!r}")
    _check_round(room, action)
    if room.revealed:
        raise WampError(REVEALED, f"the cards of round {room.round} are on the table: start a new round")
    known = room.votes.get(player)
    if known is not None and known.card == card:
        return None
    version = 1 if known is None else known.version + 1
    return replace(room, votes={**room.votes, player: Vote(card, version)})


def reveal(room: Room, player: str, action: dict[str, Any]) -> Room | None:
    """Turn the round's cards over (once is enough)."""
    _check_round(room, action)
    return None if room.revealed else replace(room, revealed=True)


def new_round(room: Room, player: str, action: dict[str, Any]) -> Room | None:
    """Start the round after the one named; nothing when another player started it already."""
    meant = action.get("round")
    if type(meant) is int and meant < room.round:
        return None  # two clicks on "new round" make one new round
    meant = _check_round(room, action)
    return Room(room.id, room.name, meant + 1)


ACTIONS = {"vote": vote, "reveal": reveal, "new_round": new_round}


# the topic


def person(member: Member) -> dict[str, Any]:
    """A member of a room as players see it: its session id and its name."""
    return {"session": member.session, "name": member.authid}


@app.topic("poker/{room}", requirements={"room": ROOM_ID}, history=HISTORY)
class PokerRoom(Topic):
    """A room: who is there (presence), its state (retained), and the players' actions (publications).

    Anyone may subscribe to any room id (the page asks ``GET /api/rooms/<id>`` first): a ``may_subscribe``
    reading the cluster's store would answer asynchronously, and the meta API, ``get_events`` included,
    hides subscriptions whose checks do not answer at once.
    """

    async def on_subscribe(self, session: Session) -> None:
        """Tell the newcomer who is at the table (then ``joined``/``left`` keep it up to date)."""
        people = [person(member) for member in await self.presence()]
        if session in self.subscribers:  # not gone while the cluster answered
            self.send(session, {"type": "people", "people": people})

    def on_join(self, member: Member) -> None:
        self.broadcast({"type": "joined", "person": person(member)})

    def on_leave(self, member: Member) -> None:
        self.broadcast({"type": "left", "person": person(member)})

    async def on_publish(self, session: Session, payload: Any, publication: Publication) -> None:
        """A player's action, applied to the room (and answered with an error when it cannot be)."""
        if not isinstance(payload, dict) or payload.get("action") not in ACTIONS:
            raise WampError(
                INVALID_ACTION, f'publish an action: {{"action": one of {", ".join(ACTIONS)}, "round": ...}}'
            )
        room = await current(self.args["room"])
        if room is None:
            raise WampError(NO_SUCH_ROOM, f"there is no room {self.args['room']!r}")
        what, player = payload["action"], session.authid or ""
        changed = ACTIONS[what](room, player, payload)
        if changed is not None:
            await app.dispatch("poker.room", RoomChanged(changed, what, player))


# who may connect, and what they may do


def valid_name(name: object) -> TypeGuard[str]:
    """A player's name: 1 to 40 letters, digits, spaces and ``_.'-``, starting with a letter or digit."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name[0].isalnum()
        and name == name.rstrip()
        and all(c.isalnum() or c in NAME_PUNCTUATION for c in name)
    )


@app.authenticator
def player(credentials: Credentials) -> Identity | None:
    """Anyone may play under the name it gives as ``authid`` (the ticket is not checked)."""
    return Identity(credentials.authid, "player") if valid_name(credentials.authid) else None


@app.authorizer
def authorize(session: Session, action: str, uri: str, match: str) -> bool:
    """The rooms' whole states, cards before the reveal included, are the app's alone."""
    return not (action in ("subscribe", "publish") and uri.startswith(STATE_PREFIX))


# REST


def _json(request: IRequest, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def _room_name_from(request: IRequest) -> str | None:
    try:
        body = json.loads(request.content.read())
    except (ValueError, UnicodeDecodeError):
        return None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not 0 < len(name) <= MAX_ROOM_NAME or not name.isprintable():
        return None
    try:
        name.encode("utf-8")  # JSON may carry lone surrogates ("\\ud800"), which no WAMP client can read
    except UnicodeEncodeError:
        return None
    return name


@app.route("/api/rooms", methods=["POST"])
async def create_room(request: IRequest) -> bytes:
    name = _room_name_from(request)
    if name is None:
        return _json(
            request,
            400,
            {"error": f'expected a JSON object with a "name": a string of 1 to {MAX_ROOM_NAME} characters'},
        )
    room = Room(secrets.token_hex(6), name)
    await app.dispatch("poker.room", RoomChanged(room, "created"))
    log.info("poker: room {room} created: {name}", room=room.id, name=name)
    request.setHeader(b"Location", f"/api/rooms/{room.id}".encode())
    return _json(request, 201, public_view(room))


@app.route("/api/rooms/<room_id>", methods=["GET"])
async def get_room(request: IRequest, room_id: str) -> bytes:
    try:
        room = await current(room_id) if re.fullmatch(ROOM_ID, room_id) else None
    except WampError as unavailable:
        return _json(request, 503, {"error": unavailable.args_list[0]})
    if room is None:
        return _json(request, 404, {"error": f"there is no room {room_id!r}"})
    return _json(request, 200, public_view(room))


@app.route("/", branch=True, methods=["GET", "HEAD"])
def page(request: IRequest) -> File:
    """The page a player opens: ``index.html``, ``app.js`` and ``style.css`` from ``static/poker/``."""
    return File(str(PAGE))


@app.route("/common/", branch=True, methods=["GET", "HEAD"])
def common(request: IRequest) -> File:
    """What the page shares with the other examples: ``base.css`` and ``live.js`` from ``static/common/``."""
    return File(str(COMMON))
