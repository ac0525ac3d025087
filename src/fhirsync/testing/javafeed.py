"""A tiny stand-in for a Java OpenMRS parent: Sync 2.0 Atom pages exactly as OpenMRS writes them.

    with JavaFeedServer(events=[JavaEvent("patient", uuid)]).start() as java:
        reader = FeedReader(http, java.base_url)

It serves ``{base}/ws/atomfeed/{category}/{n}`` and ``/recent`` the way openmrs-module-atomfeed
does (spec §3.3, §3.5): page size 5, category terms in shuffled order, content as CDATA JSON with
Java-style links (``/ws/rest/v1/patient/{uuid}?v=full``, ``/ws/fhir/Patient/{uuid}``), a 500 for a
page past the last one (and for page 1 of an empty feed), and absolute ``self``/``via`` links that
name a DIFFERENT host (the publisher's own idea of its URL), which a reader must not follow.
The base URL has the ``/openmrs`` context path, and entry links are relative to it.

Optionally it also serves the records: REST objects by path, FHIR resources by type and id (read
at ``/ws/fhir/{Type}/{id}`` and ``/ws/fhir2/R4/{Type}/{id}``, searched by ``_id`` at
``/ws/fhir2/R4/{Type}``), so the engine can pull from it. No authentication, as on Java feeds.
"""

from __future__ import annotations

import json
import random
import threading
import uuid as uuid_lib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr

from fhirsync import categories
from fhirsync.testing.stub_http import QuietHandler

CONTEXT = "/openmrs"
PUBLIC_HOST = "openmrs-parent.example.invalid:8081"
"""The host the publisher believes it has: never reachable from the tests."""
GENERATOR_URI = "https://github.com/ICT4H/atomfeed"
FEED_ID_PREFIX = "a2ad93fd-8a7f-405f-bbc1-da4535e6d05c"
# Link templates of the OLD (STU3) OpenMRS FHIR module, from defaultAtomfeedConfig.json (§11).
JAVA_FHIR_TYPES = {
    "location": "Location",
    "cohort": "Group",
    "person": "Person",
    "provider": "Provider",
    "patient": "Patient",
    "allergy": "AllergyIntolerance",
    "drug_order": "MedicationRequest",
    "test_order": "ProcedureRequest",
    "observation": "Observation",
    "encounter": "Encounter",
    "visit": "Encounter",
}
JAVA_REST_NAMES = {"observation": "obs"}


def java_links(category: str, uuid: str, parent_uuid: str | None = None) -> dict[str, str]:
    """The links map OpenMRS writes for one record of ``category`` (spec §11 templates)."""
    row = categories.find(category)
    template = row.java_rest_template if row is not None else None
    if template is None:
        name = JAVA_REST_NAMES.get(category, category)
        template = f"/ws/rest/v1/{name}/{{uuid}}?v=full"
    links = {"rest": template.replace("{uuid}", uuid).replace("{parent-uuid}", parent_uuid or "")}
    if category in JAVA_FHIR_TYPES:
        links["fhir"] = f"/ws/fhir/{JAVA_FHIR_TYPES[category]}/{uuid}"
    return links


@dataclass
class JavaEvent:
    """One row of OpenMRS's ``event_records`` table."""

    category: str
    uuid: str
    action: str = "CREATED"
    parent_uuid: str | None = None
    """The owning person/patient of a sub-resource (person_name, ...)."""
    event_uuid: str = field(default_factory=lambda: str(uuid_lib.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    links: Mapping[str, str] | None = None
    """The contents JSON; None means the Java defaults for the category."""
    location_filter: str | None = None
    """Adds a ``<feedFilter>`` term (spec §3.6) with this ``country%state%...`` value."""

    @property
    def entry_id(self) -> str:
        """``tag:atomfeed.ict4h.org:{event uuid}``, what a marker stores."""
        return f"tag:atomfeed.ict4h.org:{self.event_uuid}"

    def contents(self) -> dict[str, str]:
        """The links map of the entry."""
        if self.links is not None:
            return dict(self.links)
        return java_links(self.category, self.uuid, self.parent_uuid)


class JavaFeedServer:
    """Serves Java-style feed pages (and optionally records) on a free loopback port."""

    def __init__(
        self,
        events: Iterable[JavaEvent] = (),
        *,
        page_size: int = 5,
        fhir: Iterable[Mapping[str, Any]] = (),
        rest: Mapping[str, Mapping[str, Any]] | None = None,
        cdata: bool = True,
        seed: int = 7,
        login_redirect: bool = False,
        sync2_status: int = 404,
    ) -> None:
        self.events: list[JavaEvent] = list(events)
        self.page_size = page_size
        self.fhir: dict[tuple[str, str], dict[str, Any]] = {
            (str(r["resourceType"]), str(r["id"])): dict(r) for r in fhir
        }
        self.rest: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (rest or {}).items()}
        """REST objects by path without query, e.g. ``/ws/rest/v1/visittype/{uuid}``."""
        self.cdata = cdata
        self.login_redirect = login_redirect
        """Answer paths outside ``/ws/`` with a 302 to the login page, as the OpenMRS web
        application does for a visitor who is not signed in (``/health`` included)."""
        self.sync2_status = sync2_status
        """The status of ``/ws/rest/sync2/...`` requests (fhirsync's own, e.g. feedstate)."""
        self.broken_pages: set[tuple[str, str]] = set()
        """(category, page) pairs answered with a page that is not XML."""
        self.absent_feeds: set[str] = set()
        """Categories whose feed pages are answered 404 (a parent that does not publish them)."""
        self.requests: list[str] = []
        """Every path requested (below the context path), in order."""
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:{port}/openmrs`` (a Java base URL has a context path)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{CONTEXT}"

    def start(self) -> JavaFeedServer:
        """Serve in a background thread (returns self)."""
        owner = self

        class Handler(_Handler):
            server_owner = owner

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="javafeed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> JavaFeedServer:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def add(self, *events: JavaEvent) -> None:
        """Publish more events (they land on the last pages, as in OpenMRS)."""
        with self._lock:
            self.events.extend(events)

    def feed_requests(self, category: str) -> list[str]:
        """The feed pages of ``category`` requested so far (``recent`` or a number)."""
        prefix = f"/ws/atomfeed/{category}/"
        return [p.removeprefix(prefix) for p in self.requests if p.startswith(prefix)]

    # --- pages ----------------------------------------------------------------------------------

    def page(self, category: str, which: str) -> tuple[int, str]:
        """(status, body) of a feed page the way OpenMRS answers it."""
        if category in self.absent_feeds:
            return 404, "Not Found"
        with self._lock:
            events = [e for e in self.events if e.category == category]
        latest = -(-len(events) // self.page_size)
        if which == "recent":
            number = latest
        elif which.isdigit() and 1 <= int(which) <= latest:
            number = int(which)
        else:
            return 500, "Internal Server Error"  # what OpenMRS answers for a missing page
        if (category, which) in self.broken_pages or (category, str(number)) in self.broken_pages:
            return 200, "<feed><entry>this is not a finished page"
        chunk = events[(number - 1) * self.page_size : number * self.page_size] if number else []
        return 200, self._render(category, which, number, latest, chunk)

    def _render(
        self, category: str, which: str, number: int, latest: int, chunk: list[JavaEvent]
    ) -> str:
        service = f"http://{PUBLIC_HOST}{CONTEXT}/ws/atomfeed/{category}"
        links = [("self", f"{service}/{which}"), ("via", f"{service}/{number}")]
        if number < latest:
            links.append(("next-archive", f"{service}/{number + 1}"))
        if number > 1:
            links.append(("prev-archive", f"{service}/{number - 1}"))
        updated = max((e.timestamp for e in chunk), default=datetime.now(UTC))
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<feed xmlns="http://www.w3.org/2005/Atom">',
            "  <title>OpenMRS Feed Publisher for Sync2.0</title>",
            *(
                f'  <link rel="{rel}" type="application/atom+xml" href={quoteattr(href)} />'
                for rel, href in links
            ),
            "  <author><name>SolDevelo</name></author>",
            f"  <id>{FEED_ID_PREFIX}+{number}</id>",
            f'  <generator uri="{GENERATOR_URI}">OpenMRS Feed Publisher</generator>',
            f"  <updated>{_stamp(updated)}</updated>",
        ]
        out.extend(self._entry(e) for e in chunk)
        out.append("</feed>")
        return "\n".join(out) + "\n"

    def _entry(self, event: JavaEvent) -> str:
        terms = [event.action, event.category]
        if event.location_filter is not None:
            terms.append(
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><feedFilter>'
                "<beanName>atomfeed.locationFeedFilterStrategy</beanName>"
                f"<filter>{escape(event.location_filter)}</filter></feedFilter>"
            )
        with self._lock:
            self._random.shuffle(terms)  # a Java HashSet: any order
            contents = list(event.contents().items())
            self._random.shuffle(contents)  # a Java HashMap: any key order
        text = json.dumps(dict(contents), separators=(",", ":"))
        content = f"<![CDATA[{text}]]>" if self.cdata else escape(text)
        row = categories.find(event.category)
        title = row.title if row is not None else event.category
        stamp = _stamp(event.timestamp)
        return "\n".join(
            [
                "  <entry>",
                f"    <title>{escape(title)}</title>",
                *(f"    <category term={quoteattr(t)} />" for t in terms),
                f"    <id>{event.entry_id}</id>",
                f"    <updated>{stamp}</updated>",
                f"    <published>{stamp}</published>",
                f'    <content type="application/vnd.atomfeed+xml">{content}</content>',
                "  </entry>",
            ]
        )

    # --- records --------------------------------------------------------------------------------

    def record(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a REST or FHIR request."""
        parts = path.strip("/").split("/")
        if path.startswith("/ws/rest/v1/"):
            found = self.rest.get(path)
            return (200, found) if found is not None else (404, _rest_error("not found"))
        if path.startswith("/ws/fhir2/R4/") and len(parts) == 4:
            wanted = {i for v in parse_qs(query).get("_id", []) for i in v.split(",") if i}
            matches = [r for (t, i), r in self.fhir.items() if t == parts[3] and i in wanted]
            return 200, {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matches),
                "entry": [{"resource": r} for r in matches],
            }
        if path.startswith(("/ws/fhir/", "/ws/fhir2/R4/")) and len(parts) >= 4:
            found = self.fhir.get((parts[-2], parts[-1]))
            if found is not None:
                return 200, found
        return 404, _rest_error("not found")


class _Handler(QuietHandler):
    server_owner: JavaFeedServer

    def do_GET(self) -> None:
        owner = self.server_owner
        url = urlsplit(self.path)
        if not url.path.startswith(CONTEXT + "/"):
            self.answer(404, b"Not Found", "text/plain")
            return
        path = url.path.removeprefix(CONTEXT)
        with owner._lock:
            owner.requests.append(path)
        if owner.login_redirect and not path.startswith("/ws/"):
            self.send_response(302)
            self.send_header("Location", f"{CONTEXT}/login.htm")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/ws/rest/sync2/"):
            self.answer(owner.sync2_status, json.dumps(_rest_error("no sync2 here")).encode())
            return
        parts = path.strip("/").split("/")
        if path.startswith("/ws/atomfeed/") and len(parts) == 4:
            status, text = owner.page(parts[2], parts[3])
            kind = "application/atom+xml" if status == 200 else "text/plain"
            self.answer(status, text.encode(), kind)
            return
        status, body = owner.record(path, url.query)
        self.answer(status, json.dumps(body).encode())


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rest_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": "404"}}
