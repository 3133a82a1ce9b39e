"""Account tab: who this tab acts as; login for instructors, reviewers and admins.

A login also sets the login cookie (the page trades the login's one-time code for it at
`webapp.auth`), so a reload stays logged in; logout clears it and reloads the page.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp import auth
from webapp.handlers import account as handlers
from webapp.handlers.common import Web
from webapp.state import ActorState
from webapp.ui import named, outs

LOGIN_OUTPUTS = ("actor", "password", "login_status", "account_md", "sessions_table")
# Relative to the page, so it works under a reverse proxy's root path too.
_ROUTE = "." + auth.ROUTE
# Trades the code for the cookie and forgets it (the box is cleared at once).
TRADE_CODE_JS = f"""
async (code) => {{
  if (code) {{
    try {{
      await fetch("{_ROUTE}", {{
        method: "POST",
        headers: {{"Content-Type": "application/json"}},
        body: JSON.stringify({{code: code}}),
        credentials: "same-origin",
      }});
    }} catch (e) {{}}
  }}
  return "";
}}
"""
# The server already ended the login; the route clears the cookie, the reload shows the
# browser's anonymous identity with its own last session.
CLEAR_COOKIE_JS = f"""
async () => {{
  try {{
    await fetch("{_ROUTE}", {{method: "DELETE", credentials: "same-origin"}});
  }} catch (e) {{}}
  window.location.reload();
}}
"""


def build(c: dict[str, Any]) -> None:
    c["account_md"] = gr.Markdown(elem_id="medplib-account")
    c["username"] = gr.Textbox(label="Username", elem_id="medplib-username")
    c["password"] = gr.Textbox(label="Password", type="password", elem_id="medplib-password")
    with gr.Row():
        c["login_btn"] = gr.Button("Log in", variant="primary", elem_id="medplib-login")
        c["logout_btn"] = gr.Button("Log out")
    c["login_status"] = gr.Markdown()
    c["login_code"] = gr.Textbox(visible=False)


def wire(c: dict[str, Any], web: Web) -> None:
    def login(username: str, password: str, actor: ActorState) -> dict:
        return named(c, handlers.login(web, username, password, actor))

    fields = [c["username"], c["password"], c["actor"]]
    for trigger in (c["login_btn"].click, c["password"].submit):
        trigger(login, fields, outs(c, LOGIN_OUTPUTS, "login_code"), api_visibility="private").then(
            None, [c["login_code"]], [c["login_code"]], js=TRADE_CODE_JS, api_visibility="private"
        )

    def logout(browser_key: str, request: gr.Request) -> dict:
        return named(c, handlers.logout(web, browser_key, auth.login_token(request)))

    c["logout_btn"].click(
        logout, [c["browser_key"]], outs(c, LOGIN_OUTPUTS), api_visibility="private"
    ).then(None, js=CLEAR_COOKIE_JS, api_visibility="private")
