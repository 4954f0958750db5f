// Out of service, kindly (docs/dashboard.md, "Customer screens"): what a customer screen (the
// sample kiosk, the mirror) says when something does not work, in the store's own words
// (TEXTS, given by the gateway with the page: [screens] in docs/configuration.md).
//
//   const screen = customerScreen({device, texts, offlineText: "kiosk_offline",
//                                  banner: element, resync: () => ..., probeMs: 5000});
//   screen.connect((es) => es.addEventListener(...));   // the page's /stream listeners
//   screen.set("stock", true|false);    // a dependency the page itself saw fail
//
// Three causes, most important first: `gateway` (the page cannot reach the gateway: the stream
// errors and GET /health fails; probed every probeMs), `device` (its device is offline: GET
// /devices/{id}, then `device` items on the stream), `stock` (the page's data call said the
// stock API is down; the page looks again at every probe until it works). The banner shows one
// text, with {where}: where to go instead.
"use strict";
function customerScreen(opts) {
  const {device, texts, offlineText, banner, resync} = opts;
  const probeMs = opts.probeMs || 5000;
  const down = {gateway: false, device: false, stock: false};
  const KEY = {gateway: "gateway_down", device: offlineText, stock: "stock_down"};
  const say = (key) => (texts[key] || "").replace("{where}", texts.where || "");
  document.documentElement.lang = texts.lang || "en";

  function show() {
    const cause = ["gateway", "device", "stock"].find((c) => down[c]);
    banner.dataset.reason = cause || "";
    banner.hidden = !cause;
    banner.textContent = cause ? say(KEY[cause]) : "";
    document.body.classList.toggle("degraded", !!cause);
  }
  function set(cause, isDown) {
    if (down[cause] === isDown) return;
    down[cause] = isDown;
    show();
  }
  async function deviceStatus() {
    try {
      const r = await fetch(`/devices/${encodeURIComponent(device)}`, {cache: "no-store"});
      if (r.status === 404) set("device", true);  // never seen: not working either
      else if (r.ok) set("device", !(await r.json()).online);
    } catch (e) { /* the probe says whether the gateway is gone */ }
  }
  let probing = false;
  async function probe() {  // GET /health (public): can this page reach its gateway?
    if (probing) return;
    probing = true;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), Math.min(probeMs, 3000));
    let ok = false;
    try { ok = (await fetch("/health", {cache: "no-store", signal: ctl.signal})).ok; } catch (e) { ok = false; }
    clearTimeout(timer);
    probing = false;
    const was = down.gateway;
    set("gateway", !ok);
    if (!ok) return;
    const closed = listen && (!es || es.readyState === EventSource.CLOSED);
    if (closed) open();  // the browser gave up on the stream: a new one
    if (was || closed || down.stock) {  // back: catch up (a dependency: look again)
      deviceStatus();
      if (resync) resync();
    }
  }
  let es = null, listen = null;
  function open() {  // a stream the browser gave up on (CLOSED) is opened again
    if (es) es.close();
    es = new EventSource("/stream");
    listen(es);
    watch(es);
  }
  function connect(fn) { listen = fn; open(); }
  function watch(es) {
    es.addEventListener("device", (m) => {
      const d = JSON.parse(m.data);
      if (d.id === device) set("device", !d.online);
    });
    es.addEventListener("error", () => probe());  // EventSource retries by itself meanwhile
    es.addEventListener("open", () => { probe(); deviceStatus(); });
  }
  setInterval(probe, probeMs);
  deviceStatus();
  show();
  return {set, connect, probe, say, down};
}
