"""Hidden components carrying the named API endpoints (see webapp/API.md).

They are not shown on the page; `gradio_client` calls them by ``api_name``. The actor
``gr.State`` is the page's own, so ``/login`` then ``/rate`` acts as the logged-in user.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import api as handlers
from webapp.handlers import api_review as review_api
from webapp.handlers.common import Web
from webapp.handlers.share import base_url_of
from webapp.state import ActorState


def build_and_wire(c: dict[str, Any], web: Web) -> None:
    actor = c["actor"]
    with gr.Column(visible=False):
        text = {
            name: gr.Textbox(label=name)
            for name in (
                "username",
                "password",
                "session_id",
                "question",
                "regions_json",
                "token",
                "role",
                "link_id",
                "turn_id",
                "text_correct",
                "mask_verdicts_json",
                "comment",
                "fmt",
                "window",
                "title",
                "job_id",
                "mask_rle_json",
                "class_id",
                "since",
                "image_id",
                "match_id",
                "choice",
                "checkpoints_json",
                "default_checkpoint",
                "arena_json",
            )
        }
        number = {
            name: gr.Number(label=name)
            for name in (
                "nifti_axis",
                "nifti_slice",
                "expires_hours",
                "text_score",
                "mask_number",
                "min_rating",
            )
        }
        flag = {name: gr.Checkbox(label=name) for name in ("wait", "as_class")}
        upload_file = gr.File(label="file", type="filepath")
        result = gr.JSON(label="result")
        export_file = gr.File(label="export")
        button = gr.Button("api")

    def login(username: str, password: str, state: ActorState) -> tuple:
        return handlers.login(web, username, password, state)

    def upload(
        path: str,
        window: str,
        axis: float,
        index: float,
        title: str,
        state: ActorState,
        request: gr.Request,
    ) -> tuple:
        return handlers.upload(web, path, window, axis, index, title, state, request.session_hash)

    async def ask(
        session_id: str,
        question: str,
        regions_json: str,
        wait: bool,
        state: ActorState,
        request: gr.Request,
    ) -> tuple:
        return await handlers.ask(
            web, session_id, question, regions_json, wait, state, request.session_hash
        )

    def job(job_id: str, state: ActorState, request: gr.Request) -> dict:
        return handlers.job(web, job_id, state, request.session_hash)

    def session(session_id: str, token: str, state: ActorState, request: gr.Request) -> dict:
        return handlers.session(web, session_id, token, state, request.session_hash)

    def share(
        session_id: str,
        role: str,
        hours: float,
        as_class: bool,
        state: ActorState,
        request: gr.Request,
    ) -> dict:
        base = base_url_of(request, web.settings.root_path)
        return handlers.share(
            web, session_id, role, hours, as_class, state, request.session_hash, base
        )

    def fork(token: str, state: ActorState, request: gr.Request) -> tuple:
        return handlers.fork(web, token, state, request.session_hash)

    def revoke(link_id: str, state: ActorState, request: gr.Request) -> dict:
        return handlers.revoke(web, link_id, state, request.session_hash)

    def review_queue(state: ActorState) -> dict:
        return handlers.review_items(web, state)

    def rate(
        turn_id: str, score: float, correct: str, verdicts: str, comment: str, state: ActorState
    ) -> dict:
        return handlers.rate(web, turn_id, score, correct, verdicts, comment, state)

    def export(fmt: str, state: ActorState) -> str:
        return handlers.export(web, fmt, state)

    def correct_mask(turn_id: str, number: float, rle_json: str, state: ActorState) -> dict:
        return review_api.correct(web, turn_id, number, rle_json, state)

    def mask_versions(turn_id: str, number: float, state: ActorState) -> dict:
        return review_api.versions(web, turn_id, number, state)

    def review_stats(state: ActorState) -> dict:
        return review_api.statistics(web, state)

    def export_dataset(class_id: str, since: str, rating: float, state: ActorState) -> tuple:
        return review_api.export_dataset(web, class_id, since, rating, state)

    async def arena_start(
        image_id: str,
        question: str,
        regions_json: str,
        checkpoints_json: str,
        wait: bool,
        state: ActorState,
        request: gr.Request,
    ) -> tuple:
        return await handlers.arena_start(
            web,
            image_id,
            question,
            regions_json,
            checkpoints_json,
            wait,
            state,
            request.session_hash,
        )

    def arena_match(match_id: str, state: ActorState, request: gr.Request) -> dict:
        return handlers.arena_match(web, match_id, state, request.session_hash)

    def arena_vote(match_id: str, choice: str, state: ActorState, request: gr.Request) -> dict:
        return handlers.arena_vote(web, match_id, choice, state, request.session_hash)

    def arena_leaderboard() -> dict:
        return handlers.arena_leaderboard(web)

    def checkpoints() -> dict:
        return handlers.checkpoints(web)

    def set_checkpoints(default: str, arena_json: str, state: ActorState) -> dict:
        return handlers.set_checkpoint_choices(web, default, arena_json, state)

    t, n, f = text, number, flag
    endpoints = [
        ("login", login, [t["username"], t["password"], actor], [actor, result]),
        (
            "upload",
            upload,
            [upload_file, t["window"], n["nifti_axis"], n["nifti_slice"], t["title"], actor],
            [actor, result],
        ),
        (
            "ask",
            ask,
            [t["session_id"], t["question"], t["regions_json"], f["wait"], actor],
            [actor, result],
        ),
        ("job", job, [t["job_id"], actor], [result]),
        ("session", session, [t["session_id"], t["token"], actor], [result]),
        (
            "share",
            share,
            [t["session_id"], t["role"], n["expires_hours"], f["as_class"], actor],
            [result],
        ),
        ("fork", fork, [t["token"], actor], [actor, result]),
        ("revoke", revoke, [t["link_id"], actor], [result]),
        ("review_queue", review_queue, [actor], [result]),
        (
            "rate",
            rate,
            [
                t["turn_id"],
                n["text_score"],
                t["text_correct"],
                t["mask_verdicts_json"],
                t["comment"],
                actor,
            ],
            [result],
        ),
        ("export", export, [t["fmt"], actor], [export_file]),
        (
            "correct_mask",
            correct_mask,
            [t["turn_id"], n["mask_number"], t["mask_rle_json"], actor],
            [result],
        ),
        ("mask_versions", mask_versions, [t["turn_id"], n["mask_number"], actor], [result]),
        ("review_stats", review_stats, [actor], [result]),
        (
            "export_dataset",
            export_dataset,
            [t["class_id"], t["since"], n["min_rating"], actor],
            [export_file, result],
        ),
        (
            "arena_start",
            arena_start,
            [
                t["image_id"],
                t["question"],
                t["regions_json"],
                t["checkpoints_json"],
                f["wait"],
                actor,
            ],
            [actor, result],
        ),
        ("arena_match", arena_match, [t["match_id"], actor], [result]),
        ("arena_vote", arena_vote, [t["match_id"], t["choice"], actor], [result]),
        ("arena_leaderboard", arena_leaderboard, [], [result]),
        ("checkpoints", checkpoints, [], [result]),
        (
            "set_checkpoints",
            set_checkpoints,
            [t["default_checkpoint"], t["arena_json"], actor],
            [result],
        ),
    ]
    for name, fn, inputs, outputs in endpoints:
        # `ask` and `arena_start` may wait for a model for minutes: they must not hold up
        # other callers.
        limit = None if name in ("ask", "arena_start") else "default"
        button.click(
            fn, inputs, outputs, api_name=name, concurrency_limit=limit, show_progress="hidden"
        )
