# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The /stats half of the freeze: which binary answers, and the C baseline kept beside the manifest.

Done inside mtproxy_freeze so that freezing a host is one module run, not a scrape, a stat, a
sampling window, a copy and a slurp (each a round trip per host).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import collect_window, judge_window
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import write_private_json

BASELINE_FILE = 'baseline.json'
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import BaselineError

FLAVORS = {'c': 'C', 'go': 'Go'}


def read_baseline(path):
    """The kept baseline summary, or None when there is none."""
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError:
        raise BaselineError('%s is not valid JSON; remove it to take a new baseline' % path)
    if not isinstance(document, dict):
        raise BaselineError('%s does not hold a baseline summary; remove it to take a new baseline' % path)
    return document


def stats_version(samples):
    """The ``version`` value of the first parsed /stats sample, '' without one."""
    for sample in samples:
        if sample.get('parsed') is not None:
            return str(sample['parsed'].redacted_values().get('version') or '').strip()
    return ''


def why_unreadable(url, samples):
    """Why no sample of ``url`` could be parsed: the first error's cause."""
    for sample in samples:
        if sample.get('error'):
            return 'cannot read %s: %s' % (url, sample.get('detail') or sample['error'])
    return 'no /stats sample of %s could be read' % url


def check_flavor(service, url, expected, flavor, samples):
    if flavor is None:
        raise BaselineError('%s: %s' % (service, why_unreadable(url, samples)))
    if flavor != expected:
        raise BaselineError(
            '%s answers /stats as the %s binary but %s: refusing to continue on this host'
            % (service, FLAVORS.get(flavor, flavor), 'the freeze expects the C binary' if expected == 'c'
               else 'the state file says it runs Go'))


def observe(service, url, current, baseline_path, take_baseline, samples, interval, check_mode,
            collect=collect_window):
    """Check that the binary answering ``url`` is ``current``; take or read the C baseline.

    With ``take_baseline`` (a C host frozen now, or one without a kept baseline) ``samples`` scrapes
    ``interval`` s apart are judged and their summary kept at ``baseline_path`` (not in check mode);
    otherwise one scrape checks the flavour and the kept baseline, if any, is returned.
    Returns {flavor, version, baseline, baseline_taken, baseline_verdict}.
    """
    take = bool(take_baseline and current == 'c' and samples > 0)
    window = collect(url, max(2, samples) if take else 1, interval)
    judged = judge_window(window)
    flavor = judged.get('flavor')
    check_flavor(service, url, current, flavor, window)
    result = {'flavor': flavor, 'version': stats_version(window), 'baseline_taken': take,
              'baseline_verdict': judged['verdict'] if take else None}
    if take:
        result['baseline'] = judged['summary']
        if not check_mode:
            write_private_json(baseline_path, judged['summary'])
    else:
        result['baseline'] = read_baseline(baseline_path) or {}
    return result
