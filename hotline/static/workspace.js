// The workspace's htmx forms (notes, tags, the transcript): htmx drops an error response
// without a word. The app's own refusals and failures name where they go (HX-Retarget, set by
// hotline.workspace.private): show those. Any other error (a proxy's 502, a failed poll) is
// still dropped, so no part of the page is emptied and polling goes on.
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.isError && event.detail.xhr.getResponseHeader("HX-Retarget")) {
    event.detail.shouldSwap = true;
  }
});

// A form marked data-confirm (closing a question without a conversation, which cannot be
// undone) asks first; declined, nothing is sent. In the capture phase, so that a declined
// form's button is not disabled by data-once below.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-confirm")
      && !window.confirm(form.getAttribute("data-confirm"))) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// A form marked data-once (calling a resident, sending an SMS, the outcome, "Take the next
// question") disables its button once sent, so that a double click sends one request: a
// second outcome would be refused as "not your question" over the first one's success, and a
// second "Take the next" would claim a second question out of sight. Here
// rather than in an hx-on attribute: the Content-Security-Policy allows no code in the page.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-once")) {
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      // After the event: a disabled button's name and value would not be sent.
      setTimeout(function () { button.disabled = true; }, 0);
    });
  }
});

// The outcome form: "needs follow-up" needs the organisation the resident was referred to.
// The browser holds the form back and says so (in the page's language) before it is sent,
// so the choices made are not lost to the server's refusal, which stays for a browser
// without scripts. Checked at each change and right before the browser validates (a click
// on the button), since the suggested outcome may already be "follow-up".
function checkReferral(form) {
  var referral = form.querySelector("textarea[name=referral]");
  var chosen = form.querySelector("input[name=outcome]:checked");
  if (!referral) { return; }
  var needed = chosen !== null && chosen.value === form.getAttribute("data-referral-for");
  referral.required = needed;
  referral.setCustomValidity(needed && referral.value.trim() === ""
    ? referral.getAttribute("data-required-message") : "");
}
["change", "input", "click"].forEach(function (kind) {
  document.addEventListener(kind, function (event) {
    var form = event.target && event.target.form;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-referral-for")) {
      checkReferral(form);
    }
  }, true);
});

// What a form sent with htmx answered (the part it replaced holds "Saved." or an error) is
// written into the page's one lasting live region, #announcer, emptied first so that the same
// words said twice are said again. Only for forms (POST): the polled parts (a call's status,
// the SMS list) would otherwise be read out every few seconds.
function announce(text) {
  var announcer = document.getElementById("announcer");
  if (!announcer || !text) { return; }
  announcer.textContent = "";
  setTimeout(function () { announcer.textContent = text; }, 50);
}

// The parts polled with GET (a call's state, the SMS list) say only what changed: each
// [data-announce] element's text is noted before the swap and compared after it.
function announced(root) {
  var texts = {};
  if (root) {
    root.querySelectorAll("[data-announce]").forEach(function (element) {
      texts[element.getAttribute("data-announce")] =
        (element.getAttribute("data-announce-prefix") || "") + element.textContent.trim();
    });
  }
  return texts;
}
var before = {};
document.addEventListener("htmx:beforeSwap", function (event) {
  var target = event.detail && event.detail.target;
  if (target && target.id) { before[target.id] = announced(target); }
});

document.addEventListener("htmx:afterSettle", function (event) {
  var detail = event.detail || {};
  var target = detail.target;
  if (!target || !detail.requestConfig) { return; }
  // An outerHTML swap leaves the old element as the target: take the new one by its id.
  var part = (target.id && document.getElementById(target.id)) || target;
  if (detail.requestConfig.verb === "post") {
    if (part.tagName === "MAIN") {
      // A refusal replaced the page's content (HX-Retarget: main): the button pressed is
      // gone, so the keyboard goes to the content, and a screen reader hears its title and
      // why ("Not changed. The question is being handled by ...").
      part.focus();
      var title = part.querySelector("h1");
      var reason = title && title.nextElementSibling;
      announce([title, reason].filter(Boolean)
        .map(function (element) { return element.textContent.trim(); }).join(". "));
      return;
    }
    var said = part.querySelector(".notice[role=status], [role=alert]");
    if (said) { announce(said.textContent.trim()); }
    return;
  }
  var old = before[target.id] || {};
  var now = announced(part);
  var changed = Object.keys(now).filter(function (key) { return old[key] !== now[key]; })
    .map(function (key) { return now[key]; });
  if (changed.length) { announce(changed.join(". ")); }
});

// Unsaved typing is not lost without a word. A form's text (a note, a corrected transcript, a
// referral, an SMS) differs from what the page came with until it is saved: leaving the page
// then (a language link, or another form's button: Release, Call, the outcome) asks the
// browser's own "Leave the page?" first. The form being sent is not counted: its text goes
// with it. Forms sent with htmx stay on the page: once saved, what they hold is their new
// starting point (the part they replace usually brings a new form anyway).
function typed(form) {
  if (!(form instanceof HTMLFormElement) || form.method !== "post") { return []; }
  return Array.prototype.filter.call(form.elements, function (field) {
    var text = field instanceof HTMLTextAreaElement
      || (field instanceof HTMLInputElement && (field.type === "text" || field.type === "tel"));
    return text && !field.readOnly && !field.disabled && field.value !== field.defaultValue;
  });
}
document.addEventListener("htmx:afterRequest", function (event) {
  var detail = event.detail || {};
  var form = detail.elt instanceof Element ? detail.elt.closest("form") : null;
  if (detail.successful && form) {
    typed(form).forEach(function (field) { field.defaultValue = field.value; });
  }
});

// The form whose submission is leaving the page: a submit that htmx, data-confirm or a
// script did not stop (the last listener, so it sees their preventDefault).
var leaving = null;
document.addEventListener("submit", function (event) {
  leaving = event.defaultPrevented ? null : event.target;
});

// Its buttons enabled again (after data-once's own timer, set when it was sent).
function reenable(form) {
  setTimeout(function () {
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.disabled = false;
    });
  }, 0);
}

window.addEventListener("beforeunload", function (event) {
  var sent = leaving;
  leaving = null;
  var unsaved = Array.prototype.some.call(document.forms, function (form) {
    return form !== sent && typed(form).length > 0;
  });
  if (!unsaved) { return; }
  event.preventDefault();
  event.returnValue = true;  // what older browsers need to ask
  // Staying, the form that was being sent is not sent: a data-once form's button (disabled
  // once pressed, above) must work again. The Navigation API says the leave was called off
  // (navigateerror); a browser without it gets the button back at once (the dialog has
  // already absorbed a double click).
  if (!(sent instanceof HTMLFormElement) || !sent.hasAttribute("data-once")) { return; }
  if (window.navigation) {
    window.navigation.addEventListener("navigateerror", function () { reenable(sent); },
                                       {once: true});
  } else {
    reenable(sent);
  }
});
