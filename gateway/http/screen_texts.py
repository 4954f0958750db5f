"""What the customer screens (the sample kiosk, the fitting-room mirror) say, in the store's own
words and languages: the built-in texts below, overridden by `[screens] texts_file`
(docs/configuration.md, "[screens]"). Pure: no I/O except reading that file at start.

A page gets its texts when it is served (`ScreenTexts.for_page`), so it can still say "we are
reconnecting" when the gateway is gone. The file (JSON, at most `MAX_FILE_BYTES`):

    {"fr": {"kiosk_offline": "Ce présentoir se repose : {where}"},
     "points": {"pad-1": {"en": "the one by the window works",
                          "fr": "celui près de la fenêtre fonctionne"}}}

Each language maps text keys (`DEFAULTS["en"]`) to strings of at most `MAX_TEXT` characters; a
key it does not set falls back to that language's built-in text, then to English. `{where}` in
an out-of-service text is the point's entry in `points` (where to go instead), else `where`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 64 * 1024
MAX_TEXT = 300
#: texts a device's own screen shows (the rack display's 8x8 font): at most 16 printable ASCII
DEVICE_TEXT_RE = re.compile(r"[ -~]{1,16}\Z")
#: texts of the locker bank's display (one line on its character display): printable ASCII
LOCKER_TEXT_RE = re.compile(r"[ -~]{1,120}\Z")
LOCKER_MAX = 120
#: a printf placeholder (or a lone % at the end): the bank formats these texts with %
_PCT_RE = re.compile(r"%.?", re.DOTALL)
LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?\Z")

DEFAULTS: dict[str, dict[str, str]] = {
    "en": {
        "kiosk_title": "Samples",
        "kiosk_idle": "Put a sample on the pad to see it here",
        "kiosk_unknown": "We do not have the details of this sample here — an associate will "
                         "be happy to help",
        "price": "Price",
        "colours": "Colours",
        "stock_here": "In this store",
        "stock_elsewhere": "In our other stores",
        "none": "none",
        "elsewhere_unavailable": "cannot be checked right now",
        "kiosk_offline": "This pad is resting for a moment — {where}",
        "mirror_offline": "This mirror is taking a short break — {where}",
        "gateway_down": "We are reconnecting this screen — {where}",
        "stock_down": "Prices and stock cannot be checked just now — {where}",
        "where": "an associate will be happy to help",
        # the endless aisle on the kiosk (docs/endless-aisle.md)
        "aisle_ask": "Not here? Ask for it",
        "aisle_title": "We will get it for you",
        "aisle_contact": "It comes from another store: where should we send the locker code?",
        "aisle_phone": "Mobile number (+33…)",
        "aisle_send": "Send",
        "aisle_close": "Close",
        "aisle_tube": "It is in our stockroom: on its way by tube to {station}",
        "aisle_staff": "It is in our stockroom: an associate is bringing it to you",
        "aisle_floor": "It is on the sales floor: an associate will show you where",
        "aisle_order": "Ordered for you: a locker is reserved in this store ({bank}). The pickup "
                       "code will be sent to {contact}",
        "aisle_sent": "Your parcel is in its locker: the pickup code has been sent to {contact}",
        "aisle_busy": "Many requests just now: please try again in a minute",
        "aisle_failed": "We could not ask for it: {detail}",
        # the rack display (docs/rack-display.md): its 8x8 font, so at most 16 printable ASCII
        "rack_stale": "LAST KNOWN",
        # the locker bank's display (docs/lockers.md "Texts"): printable ASCII (no accents: its
        # character set), at most LOCKER_MAX each, the same %d/%s as the English one; in this order
        "locker_idle": "Enter your pickup code, then #",
        "locker_cleared": "Cleared - Enter your pickup code, then #",
        "locker_offline": "This locker is offline for new orders - your code still works",
        "locker_digits": "Please enter all %d digits of your code, then #",
        "locker_ok": "Code OK - door %d is opening",
        "locker_open": "Door %d is open - please take your parcel and close the door",
        "locker_wait": "Door %d is opening - please wait",
        "locker_thanks": "Thank you - enjoy your order",
        "locker_unknown": "Code not recognised - please check it and try again",
        "locker_used":
            "This code has already been used - if you did not get your parcel, please ask staff",
        "locker_revoked": "This code is no longer valid - please contact the store",
        "locker_expired": "This code has expired - please contact the store",
        "locker_staff": "Locker %d needs staff attention - please ask at the store counter",
        "locker_busy": "Door %d is open right now - please ask at the store counter",
        "locker_lockout": "Too many wrong codes - the keypad is locked for %s",
        "locker_locked": "The keypad is locked - please try again in %s",
        "locker_jammed":
            "Sorry, door %d did not open. Staff have been told - please ask at the store counter, your parcel is safe",
        "locker_ajar": "Door %d is still open - please close it",
        "locker_restarted": "Sorry, the locker restarted - please enter your code again",
        "locker_min1": "1 minute",
        "locker_mins": "%d minutes",
        "locker_resting": "This locker bank is resting - please ask at the store counter",
    },
    "fr": {
        "kiosk_title": "Échantillons",
        "kiosk_idle": "Posez un échantillon sur le présentoir pour le découvrir ici",
        "kiosk_unknown": "Nous n'avons pas le détail de cet échantillon ici — un conseiller "
                         "se fera un plaisir de vous aider",
        "price": "Prix",
        "colours": "Coloris",
        "stock_here": "Dans ce magasin",
        "stock_elsewhere": "Dans nos autres magasins",
        "none": "aucun",
        "elsewhere_unavailable": "non consultable pour le moment",
        "kiosk_offline": "Ce présentoir se repose un instant — {where}",
        "mirror_offline": "Ce miroir fait une petite pause — {where}",
        "gateway_down": "Nous reconnectons cet écran — {where}",
        "stock_down": "Les prix et le stock ne peuvent pas être consultés pour le moment — "
                      "{where}",
        "where": "un conseiller se fera un plaisir de vous aider",
        "aisle_ask": "Pas ici ? Demandez-le",
        "aisle_title": "Nous allons le chercher pour vous",
        "aisle_contact": "Il vient d'un autre magasin : où envoyer le code du casier ?",
        "aisle_phone": "Numéro de mobile (+33…)",
        "aisle_send": "Envoyer",
        "aisle_close": "Fermer",
        "aisle_tube": "Il est dans notre réserve : il arrive par tube à {station}",
        "aisle_staff": "Il est dans notre réserve : un conseiller vous l'apporte",
        "aisle_floor": "Il est en rayon : un conseiller vous montrera où",
        "aisle_order": "Commandé pour vous : un casier vous attend dans ce magasin ({bank}). Le "
                       "code de retrait sera envoyé à {contact}",
        "aisle_sent": "Votre colis est dans son casier : le code de retrait a été envoyé à {contact}",
        "aisle_busy": "Beaucoup de demandes en ce moment : réessayez dans une minute",
        "aisle_failed": "La demande n'a pas pu être faite : {detail}",
        "rack_stale": "DERNIER CHIFFRE",
        # the locker bank's display: printable ASCII, no accents
        "locker_idle": "Tapez votre code de retrait, puis #",
        "locker_cleared": "Efface - Tapez votre code de retrait, puis #",
        "locker_offline":
            "Ce casier est hors ligne pour les nouvelles commandes - votre code fonctionne",
        "locker_digits": "Tapez les %d chiffres de votre code, puis #",
        "locker_ok": "Code bon - la porte %d s'ouvre",
        "locker_open": "La porte %d est ouverte - prenez votre colis et refermez la porte",
        "locker_wait": "La porte %d s'ouvre - un instant",
        "locker_thanks": "Merci - bonne journee",
        "locker_unknown": "Code inconnu - verifiez-le et reessayez",
        "locker_used":
            "Ce code a deja servi - si vous n'avez pas votre colis, demandez a un conseiller",
        "locker_revoked": "Ce code n'est plus valable - contactez le magasin",
        "locker_expired": "Ce code a expire - contactez le magasin",
        "locker_staff": "Le casier %d attend un conseiller - demandez a l'accueil",
        "locker_busy": "La porte %d est ouverte en ce moment - demandez a l'accueil",
        "locker_lockout": "Trop de codes faux - le clavier est bloque pour %s",
        "locker_locked": "Le clavier est bloque - reessayez dans %s",
        "locker_jammed":
            "Desole, la porte %d ne s'est pas ouverte. Un conseiller est prevenu - demandez a "
            "l'accueil, votre colis est en securite",
        "locker_ajar": "La porte %d est encore ouverte - refermez-la",
        "locker_restarted": "Desole, le casier a redemarre - tapez votre code a nouveau",
        "locker_min1": "1 minute",
        "locker_mins": "%d minutes",
        "locker_resting": "Ces casiers se reposent - demandez a l'accueil",
    },
}
KEYS = tuple(DEFAULTS["en"])


class TextsError(ValueError):
    """The texts file is wrong: the gateway says what and exits 2 (like a bad catalog)."""


def _text(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TextsError(f"{where}: expected a non-empty string, got {v!r}")
    if len(v) > MAX_TEXT:
        raise TextsError(f"{where}: {len(v)} characters, at most {MAX_TEXT}")
    return v


def _lang(where: str, lang: Any) -> str:
    if not isinstance(lang, str) or not LANG_RE.match(lang):
        raise TextsError(f"{where}: {lang!r} is not a language code (e.g. en, fr, nl-BE)")
    return lang


class ScreenTexts:
    def __init__(self, data: dict[str, Any] | None = None, language: str = "en",
                 source: str = "texts") -> None:
        data = data or {}
        if not isinstance(data, dict):
            raise TextsError(f'{source}: expected {{"<lang>": {{...}}, "points": {{...}}}}')
        self.language = _lang(f"{source}: [screens] language", language)
        langs: dict[str, dict[str, str]] = {k: dict(v) for k, v in DEFAULTS.items()}
        points: dict[str, dict[str, str]] = {}
        for key, body in data.items():
            if not isinstance(body, dict):
                raise TextsError(f"{source}: {key}: expected an object")
            if key == "points":
                for dev, by_lang in body.items():
                    if not isinstance(by_lang, dict):
                        raise TextsError(f"{source}: points.{dev}: expected "
                                         '{"<lang>": "where to go instead"}')
                    points[dev] = {_lang(f"{source}: points.{dev}", lg):
                                   _text(f"{source}: points.{dev}.{lg}", t)
                                   for lg, t in by_lang.items()}
                continue
            lang = _lang(source, key)
            for name, t in body.items():
                if name not in KEYS:
                    raise TextsError(f"{source}: {lang}.{name}: unknown text; known: "
                                     f"{', '.join(KEYS)}")
                langs.setdefault(lang, {})[name] = _text(f"{source}: {lang}.{name}", t)
                if name.startswith("rack_") and not DEVICE_TEXT_RE.match(t):
                    raise TextsError(f"{source}: {lang}.{name}: {t!r}: at most 16 printable ASCII "
                                     "characters, no accents (the rack display's font)")
                if name.startswith("locker_"):
                    if not LOCKER_TEXT_RE.match(t):
                        raise TextsError(f"{source}: {lang}.{name}: {t!r}: at most {LOCKER_MAX} "
                                         "printable ASCII characters, no accents (what the locker "
                                         "bank's display shows)")
                    want = _PCT_RE.findall(DEFAULTS["en"][name])
                    if _PCT_RE.findall(t) != want:
                        raise TextsError(f"{source}: {lang}.{name}: {t!r}: must contain "
                                         + (" then ".join(want) if want else "no %")
                                         + " exactly like the built-in text ("
                                         f"{DEFAULTS['en'][name]!r}): the bank fills it in")
        self.langs = langs
        self.points = points

    @classmethod
    def load(cls, path: Path | None, language: str = "en") -> ScreenTexts:
        if path is None:
            return cls(None, language)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise TextsError(f"[screens] texts_file {path}: {exc.strerror}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise TextsError(f"[screens] texts_file {path}: {len(raw)} bytes, at most "
                             f"{MAX_FILE_BYTES}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise TextsError(f"[screens] texts_file {path}: not JSON: {exc}") from None
        return cls(data, language, source=f"[screens] texts_file {path}")

    def for_page(self, device: str, lang: str | None = None) -> dict[str, str]:
        """Every text of `lang` (else the configured language) for the screen of `device`, with
        `where` set to the point's own 'where to go instead' when the store gave one."""
        lg = lang if lang in self.langs else self.language
        out = {**DEFAULTS["en"], **self.langs.get(lg, {})}
        own = self.points.get(device, {})
        where = own.get(lg) or own.get("en")
        if where:
            out["where"] = where
        out["lang"] = lg
        return out


LOCKER_KEYS = tuple(k for k in KEYS if k.startswith("locker_"))


def locker_lines(texts: dict[str, str]) -> str:
    """The locker bank's texts (from `for_page`) as its `texts` command carries them: one line
    each, in LOCKER_KEYS order (the firmware's TX order, edge/apps/locker.py)."""
    return "\n".join(texts[k] for k in LOCKER_KEYS)


def inject(html: str, device: str, texts: dict[str, str]) -> str:
    """The page template with its device id and texts (JSON in a script: `</` escaped)."""
    blob = json.dumps(texts, ensure_ascii=False).replace("</", "<\\/")
    return html.replace("{{TEXTS}}", blob).replace("{{DEVICE}}", device)
