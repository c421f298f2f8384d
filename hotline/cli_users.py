"""`hotline users`: the workspace's accounts, managed on the server."""

from __future__ import annotations

from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext

from hotline.runtime import Runtime
from storage.db import unit_of_work
from storage.models import ROLES
from storage.users import MIN_PASSWORD_LENGTH, UserError, add_user, list_users


def _runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["hotline"])


@click.group()
def users() -> None:
    """Consultants' and coordinators' accounts."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="consultant: works the queue; coordinator: also manages accounts.")
@click.option("--name", required=True, help="The name colleagues know them by.")
@click.option("--phone", help="Their own phone (callbacks ring it first), e.g. +77011234567.")
@with_appcontext
def users_add(email: str, role: str, name: str, phone: str | None) -> None:
    """Create an account; the password is asked twice and never echoed."""
    password = click.prompt(f"Password (at least {MIN_PASSWORD_LENGTH} characters)",
                            hide_input=True, confirmation_prompt=True)
    rt = _runtime()
    try:
        with unit_of_work(rt.sessions) as session:
            user = add_user(session, email, name, role, password, phone=phone,
                            region=rt.settings.default_region)
            created = f"{user.role} {user.email} (#{user.id})"
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {created}")


@users.command("list")
@with_appcontext
def users_list() -> None:
    """List every account."""
    with unit_of_work(_runtime().sessions) as session:
        rows = [(u.id, u.email, u.name, u.role, u.phone or "-", "active" if u.active else
                 "inactive") for u in list_users(session)]
    if not rows:
        click.echo("no users yet: add one with `hotline users add EMAIL --role coordinator "
                   "--name NAME`")
        return
    for user_id, email, name, role, phone, state in rows:
        click.echo(f"#{user_id:<4} {role:<11} {email:<32} {phone:<13} {state:<8} {name}")
