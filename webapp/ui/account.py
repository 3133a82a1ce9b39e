"""Account tab: who this tab acts as; login for instructors, reviewers and admins."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.handlers import account as handlers
from webapp.handlers.common import Web
from webapp.ui import named, outs

LOGIN_OUTPUTS = ("actor", "password", "login_status", "account_md", "sessions_table")


def build(c: dict[str, Any]) -> None:
    c["account_md"] = gr.Markdown(elem_id="medplib-account")
    c["username"] = gr.Textbox(label="Username", elem_id="medplib-username")
    c["password"] = gr.Textbox(label="Password", type="password", elem_id="medplib-password")
    with gr.Row():
        c["login_btn"] = gr.Button("Log in", variant="primary", elem_id="medplib-login")
        c["logout_btn"] = gr.Button("Log out")
    c["login_status"] = gr.Markdown()


def wire(c: dict[str, Any], web: Web) -> None:
    def login(username: str, password: str, actor: dict) -> dict:
        return named(c, handlers.login(web, username, password, actor))

    fields = [c["username"], c["password"], c["actor"]]
    c["login_btn"].click(login, fields, outs(c, LOGIN_OUTPUTS), api_visibility="private")
    c["password"].submit(login, fields, outs(c, LOGIN_OUTPUTS), api_visibility="private")

    def logout(browser_key: str) -> dict:
        return named(c, handlers.logout(web, browser_key))

    c["logout_btn"].click(
        logout, [c["browser_key"]], outs(c, LOGIN_OUTPUTS), api_visibility="private"
    )
