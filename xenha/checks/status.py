"""The storage checks' status line: one verdict from the resource, then the
first metric out of range (a slow login, a small disk, a long round trip)."""

import nagiosplugin


class Status(nagiosplugin.Context):
    """The 'status' metric: the resource's `verdict` (state, text) as it is."""

    def evaluate(self, metric, resource):
        state, text = resource.verdict
        return self.result_cls(state, text, metric)

    def performance(self, metric, resource):
        return None


class StatusSummary(nagiosplugin.Summary):
    def ok(self, results):
        return results['status'].hint

    def problem(self, results):
        first = results.first_significant
        if first.metric is None or first.metric.name == 'status':
            return first.hint
        hint = f'{first.metric.description} ({first.hint})'
        return f'{results["status"].hint}, {hint}' if 'status' in results else hint
