// API token for the gateway's own pages (docs/security.md): open the page as
// /dashboard#token=<token> (or /mirror/<room>#token=...). The token stays in this tab
// (sessionStorage) and never goes into a URL the server logs, except ?access_token= on the
// event stream, because EventSource cannot send headers.
(() => {
  const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("pe-token") || "";
  if (!TOKEN) return;
  sessionStorage.setItem("pe-token", TOKEN);
  if (location.hash.includes("token=")) history.replaceState(null, "", location.pathname + location.search);
  const plainFetch = window.fetch.bind(window);
  window.fetch = (path, opts = {}) =>
    plainFetch(path, {...opts, headers: {...(opts.headers || {}), Authorization: "Bearer " + TOKEN}});
  const PlainEventSource = window.EventSource;
  window.EventSource = class extends PlainEventSource {
    constructor(url, init) {
      super(url + (String(url).includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(TOKEN), init);
    }
  };
})();
