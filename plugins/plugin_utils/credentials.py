# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep credentials of URLs out of records, reports and messages.

A download URL may carry a user and password (``https://user:token@host/...``) or a token in its
query (``?access_token=...``, a pre-signed S3 or GCS URL). Everything a run writes or prints goes
through ``redact_url`` / ``redact_urls_in_text`` / ``redact_value``; ``split_url_credentials``
hands the user and password of a URL to ``get_url`` as ``url_username`` / ``url_password``
(``no_log``) instead of leaving them in the URL.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# Query keys whose value is a credential (compared in lower case). Signed-URL schemes included:
# AWS S3 (X-Amz-*), Google Cloud Storage (X-Goog-*), Azure SAS (sig), GitLab/GitHub style tokens.
TOKEN_QUERY_KEYS = frozenset((
    "access_token", "api_key", "apikey", "api-key", "auth", "auth_token", "authorization", "client_secret",
    "code", "id_token", "jwt", "key", "pass", "passwd", "password", "private_token", "job_token",
    "refresh_token", "secret", "session", "session_token", "sessionid", "sig", "signature", "token",
    "x-amz-credential", "x-amz-security-token", "x-amz-signature", "x-goog-credential",
    "x-goog-signature", "x-oss-signature", "ossaccesskeyid", "awsaccesskeyid", "expires_token",
))

URL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def _is_token_key(key):
    return key.lower() in TOKEN_QUERY_KEYS


def redact_url(url):
    """``url`` without its userinfo and without query parameters that carry a credential.

    Anything that is not a URL with a scheme and a host comes back unchanged.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(key, value) for key, value in pairs if not _is_token_key(key)]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    fragment = parts.fragment
    if fragment and "=" in fragment:
        pairs = parse_qsl(fragment, keep_blank_values=True)
        kept = [(key, value) for key, value in pairs if not _is_token_key(key)]
        if len(kept) != len(pairs):
            fragment = urlencode(kept)
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_urls_in_text(text):
    """Every URL inside ``text`` redacted (error messages quote the URL they failed on)."""
    if not isinstance(text, str) or "://" not in text:
        return text

    def redact_match(match):
        url = match.group(0)
        # Punctuation that ends a sentence is not part of the URL.
        core = url.rstrip(".,;:!?)]}")
        return redact_url(core) + url[len(core):]

    return URL_PATTERN.sub(redact_match, text)


def redact_value(value):
    """``value`` (str, list, dict, nested) with every URL in every string redacted; keys too."""
    if isinstance(value, str):
        return redact_urls_in_text(value)
    if isinstance(value, dict):
        return dict((redact_urls_in_text(k) if isinstance(k, str) else k, redact_value(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


def split_url_credentials(url):
    """(url without userinfo, user or '', password or '') for get_url's url_username/url_password."""
    if not isinstance(url, str) or "://" not in url:
        return url, "", ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, "", ""
    userinfo, sep, host = parts.netloc.rpartition("@")
    if not sep:
        return url, "", ""
    user, dummy, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, unquote(user), unquote(password)
