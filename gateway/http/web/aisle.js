// The endless aisle's step on a customer screen (docs/endless-aisle.md): "not here? ask for it".
// aislePanel({origin, originKind, texts}) adds the panel to the page and returns
//   button(gtin, label): a "Not here? Ask for it" button for one product,
//   heard(item): give it the page's `aisle` stream items (it says when the code has been sent).
// The answers it shows never hold a pickup code (the API never gives one to these tokens).
// Needs /web/auth.js (the token) and the texts of the page (aisle_* keys, gateway/http/screen_texts.py).
"use strict";
function aislePanel({origin, originKind, texts: T}) {
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  };
  const fmt = (text, vars) => text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  document.head.append(el("style", {}, `
    button.ask { font-size: 1rem; padding: .3rem .8rem; border-radius: 8px; border: 1px solid #b9a98a;
                 background: #fff; color: #222; cursor: pointer; margin-left: .4rem; }
    #aisle { position: fixed; left: 10%; right: 10%; bottom: 2rem; background: #fff; border-radius: 14px;
             box-shadow: 0 6px 30px rgba(0,0,0,.18); padding: 1.25rem 1.5rem; font-size: 1.3rem; color: #222; }
    #aisle h3 { margin: 0 0 .5rem; font-weight: 500; }
    #aisle input { font-size: 1.3rem; padding: .4rem; width: 16rem; }
    #aisle button { font-size: 1.2rem; padding: .4rem 1rem; margin-left: .5rem; }
    #aisle-status { margin: .75rem 0 0; }`));
  const phone = el("input", {id: "aisle-phone", "data-testid": "aisle-phone", type: "tel", autocomplete: "tel",
                             maxlength: "64", placeholder: T.aisle_phone});
  const form = el("form", {id: "aisle-form", "data-testid": "aisle-form", hidden: ""},
                  el("p", {}, T.aisle_contact), phone,
                  el("button", {id: "aisle-send", "data-testid": "aisle-send", type: "submit"}, T.aisle_send));
  const what = el("div", {id: "aisle-what", "data-testid": "aisle-what"});
  const status = el("p", {id: "aisle-status", "data-testid": "aisle-status"});
  const close = el("button", {id: "aisle-close", "data-testid": "aisle-close", type: "button"}, T.aisle_close);
  const box = el("div", {id: "aisle", "data-testid": "aisle", hidden: ""},
                 el("h3", {}, T.aisle_title), what, form, status, close);
  document.body.append(box);
  let asking = null;  // {gtin, key, id, contact}: one idempotency key per request, kept for its retry

  async function send(contact) {
    if (!asking) return;
    const body = {idempotency_key: asking.key, origin, origin_kind: originKind, gtin: asking.gtin, lang: T.lang};
    if (contact) body.contact = contact;
    let r, v;
    try {
      r = await fetch("/aisle/requests", {method: "POST", headers: {"content-type": "application/json"},
                                           body: JSON.stringify(body)});
      v = await r.json();
    } catch (e) { status.textContent = fmt(T.aisle_failed, {detail: T.where}); return; }
    if (r.status === 429) { status.textContent = T.aisle_busy; return; }
    if (!r.ok) {
      if (v.reason === "contact-needed" || v.reason === "bad-contact") {
        form.hidden = false;
        phone.focus();
        status.textContent = v.reason === "bad-contact" ? v.detail : "";
        return;
      }
      status.textContent = fmt(T.aisle_failed, {detail: v.detail || T.where});
      return;
    }
    form.hidden = true;
    asking.id = v.id;
    asking.contact = v.contact;
    status.dataset.route = v.route;
    status.textContent = fmt(T["aisle_" + v.route] || T.aisle_staff,
                             {station: v.station || "", bank: v.bank || "", contact: v.contact || ""});
  }

  function open(gtin, label) {
    const rnd = crypto.getRandomValues(new Uint32Array(2));
    asking = {gtin, key: `${origin}.${Date.now().toString(36)}.${rnd[0].toString(36)}${rnd[1].toString(36)}`};
    what.textContent = label;
    status.textContent = "";
    delete status.dataset.route;
    delete status.dataset.message;
    form.hidden = true;
    box.hidden = false;
    send(null);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const raw = phone.value.trim();  // an address as typed; a number without its spaces, dots, dashes
    send(raw.includes("@") ? {channel: "email", to: raw} : {channel: "sms", to: raw.replace(/[\s.-]/g, "")});
  });
  close.onclick = () => { asking = null; box.hidden = true; };

  return {
    button(gtin, label) {
      const b = el("button", {class: "ask", type: "button", "data-testid": "ask", "data-gtin": gtin}, T.aisle_ask);
      b.onclick = () => open(gtin, label);
      return b;
    },
    heard(a) {  // an `aisle` stream item: this request's message went out
      if (!asking || a.request !== asking.id || a.type !== "message.delivered") return;
      status.dataset.message = "delivered";
      status.textContent = fmt(T.aisle_sent, {contact: asking.contact || ""});
    },
  };
}
