"""The users page, for coordinators: every account, and changing one (name, phone, role, open or
closed). New accounts are made on the server (`hotline users`), and a password is only ever
typed by its owner: there (`hotline users add`, `password`) or on their own account page
(account_page), never in a form a coordinator fills in for someone else.

A new phone number takes the coordinator's own password too, as on one's own account page: the
hotline connects residents to it, and a coordinator's session alone (left open, or stolen) must
not be enough to send a consultant's callbacks to another phone. Removing a number, and every
other change, takes the session alone.

A coordinator does not close their own account or take away their own role here (the page
would lock them out mid-change); storage.users refuses to leave no active coordinator at all.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from hotline import auth
from hotline.auth import client_address
from hotline.workspace import ROLES, bp, local_time, runtime
from storage import audit
from storage.db import unit_of_work
from storage.models import ROLE_COORDINATOR, User
from storage.phones import normalise_phone
from storage.users import UserError, change_user, list_users


@bp.get("/admin/users")
@auth.role_required(ROLE_COORDINATOR)
def users() -> ResponseReturnValue:
    """List the workspace's accounts."""
    with unit_of_work(runtime().sessions) as db:
        accounts = [
            {"id": u.id, "name": u.name, "email": u.email,
             "role": str(ROLES.get(u.role, u.role)), "phone": u.phone or "—",
             "active": u.active,
             "last_login": local_time(u.last_login_at) if u.last_login_at else "—"}
            for u in list_users(db)
        ]
    return render_template("users.html", accounts=accounts)


def _account(db_user: User) -> dict[str, object]:
    return {"id": db_user.id, "name": db_user.name, "email": db_user.email,
            "role": db_user.role, "phone": db_user.phone or "", "active": db_user.active}


def _form(account: dict[str, object], error: str | None = None, status: int = 200,
          headers: dict[str, str] | None = None) -> ResponseReturnValue:
    me = auth.current_account().id == account["id"]
    return render_template("user_edit.html", account=account, roles=list(ROLES.items()),
                           me=me, error=error), status, headers or {}


@bp.get("/admin/users/<int:user_id>")
@auth.role_required(ROLE_COORDINATOR)
def user(user_id: int) -> ResponseReturnValue:
    """The form that changes one account."""
    with unit_of_work(runtime().sessions) as db:
        found = db.get(User, user_id)
        if found is None:
            abort(404)
        account = _account(found)
    return _form(account)


@bp.post("/admin/users/<int:user_id>")
@auth.role_required(ROLE_COORDINATOR)
def change(user_id: int) -> ResponseReturnValue:
    """Save the form: the changes and their audit event in one transaction."""
    me = auth.current_account()
    name = request.form.get("name", "").replace("\x00", "")
    phone = request.form.get("phone", "").replace("\x00", "")[:40]
    role = request.form.get("role", "")
    active = request.form.get("active") == "1"
    current = request.form.get("current", "")
    if role not in ROLES:
        abort(400)
    region = runtime().settings.default_region
    with unit_of_work(runtime().sessions) as db:
        found = db.get(User, user_id)
        if found is None:
            abort(404)
        entered = {**_account(found), "name": name, "phone": phone, "role": role,
                   "active": active}
        if found.id == me.id and (not active or role != found.role):
            return _form(entered, _("You cannot close your own account or change your own "
                                    "role here. Ask another coordinator."), 400)
        typed = normalise_phone(phone, region)
        if typed is not None and typed != found.phone:
            if not current:  # the field overlooked: said plainly, and no failed login
                return _form(entered, _("A new phone number needs your own password: type it "
                                        "under \"Your password\"."), 400)
            refused = auth.recheck_password(db, db.get_one(User, me.id), current)
            if refused is not None:  # (a wrong one is kept as a failed login: committed)
                return _form(entered, refused.message, refused.status, refused.headers)
        try:
            changes = change_user(db, found, name=name, phone=phone, role=role, active=active,
                                  region=region)
        except UserError as exc:
            db.rollback()
            return _form(entered, user_error(exc), 400)
        if changes:
            audit.record(db, me.id, audit.ACCOUNT, ip=client_address(), account=found.email,
                         **changes)
        saved = found.name
    flash(_("Saved: %(name)s.", name=saved) if changes else
          _("Nothing was changed: %(name)s.", name=saved))
    return redirect(url_for("workspace.users"), 303)


def user_error(exc: UserError) -> str:
    """storage.users' refusal in the page's language."""
    if exc.code == "phone":
        return str(_("This is not a phone number. Write it as +7 701 123 45 67."))
    if exc.code == "last_coordinator":
        return str(_("This is the only active coordinator. Make another coordinator first."))
    if exc.code == "name":
        return str(_("A name is needed."))
    return str(exc)
