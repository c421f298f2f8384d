"""`hotline users`: the workspace's accounts, managed on the server."""

from __future__ import annotations

from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext

from hotline.runtime import Runtime
from storage import audit
from storage.db import unit_of_work
from storage.models import ROLES
from storage.users import (
    MIN_PASSWORD_LENGTH,
    UserError,
    add_user,
    change_user,
    check_new_user,
    find_user,
    list_users,
    set_password,
)


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
    rt = _runtime()
    try:
        # The email, phone and a taken email are refused before the password is typed (twice),
        # not after. Asked outside any transaction (users_password says why); add_user checks
        # all again in its own, should the email have been taken in the meantime.
        with unit_of_work(rt.sessions) as session:
            check_new_user(session, email, name, role, phone=phone,
                           region=rt.settings.default_region)
        password = click.prompt(f"Password (at least {MIN_PASSWORD_LENGTH} characters)",
                                hide_input=True, confirmation_prompt=True)
        with unit_of_work(rt.sessions) as session:
            user = add_user(session, email, name, role, password, phone=phone,
                            region=rt.settings.default_region)
            audit.record(session, None, audit.ACCOUNT, account=user.email, created=True,
                         role=user.role, via=audit.VIA_CLI)
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


def _change(email: str, *, name: str | None = None, role: str | None = None,
            phone: str | None = None, active: bool | None = None) -> None:
    """Apply a change to one account with its audit event, and say what came of it."""
    rt = _runtime()
    try:
        with unit_of_work(rt.sessions) as session:
            user = find_user(session, email)
            changes = change_user(session, user, name=name, role=role, phone=phone,
                                  active=active, region=rt.settings.default_region)
            if changes:
                audit.record(session, None, audit.ACCOUNT, account=user.email, via=audit.VIA_CLI,
                             **changes)
            email = user.email
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    if not changes:
        click.echo(f"{email}: nothing to change")
        return
    words = [f"phone {'changed' if value else 'removed'}" if key == "phone" else f"{key} {value}"
             for key, value in changes.items()]
    click.echo(f"{email}: " + ", ".join(words))


@users.command("edit")
@click.argument("email")
@click.option("--name", help="A new name.")
@click.option("--role", type=click.Choice(ROLES), help="A new role.")
@click.option("--phone", help="A new phone for callbacks; '' removes it.")
@with_appcontext
def users_edit(email: str, name: str | None, role: str | None, phone: str | None) -> None:
    """Change an account's name, role or phone."""
    _change(email, name=name, role=role, phone=phone)


@users.command("close")
@click.argument("email")
@with_appcontext
def users_close(email: str) -> None:
    """Close an account (someone left): their sessions end at once, their questions go back to
    the queue, and they cannot log in. Their name stays on what they did (the audit log)."""
    _change(email, active=False)


@users.command("open")
@click.argument("email")
@with_appcontext
def users_open(email: str) -> None:
    """Open a closed account again."""
    _change(email, active=True)


@users.command("password")
@click.argument("email")
@with_appcontext
def users_password(email: str) -> None:
    """Set a new password (asked twice, hidden); sessions opened with the old one end."""
    rt = _runtime()
    try:
        # Asked outside any transaction: on SQLite an open one holds the database's write lock,
        # and every call and SMS would wait while the password is typed.
        with unit_of_work(rt.sessions) as session:
            email = find_user(session, email).email
        password = click.prompt(f"New password for {email} (at least {MIN_PASSWORD_LENGTH} "
                                "characters)", hide_input=True, confirmation_prompt=True)
        with unit_of_work(rt.sessions) as session:
            user = find_user(session, email)
            set_password(session, user, password)
            audit.record(session, None, audit.ACCOUNT, account=user.email, password=True,
                         via=audit.VIA_CLI)
            email = user.email
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{email}: new password set; their other sessions have ended")
