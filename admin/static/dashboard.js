// The Dashboard's charts, drawn with the vendored Chart.js (admin/static/vendor/chartjs, MIT) from
// the figures the page embeds as JSON (#dashboard-data). No network access needed.
(function () {
  "use strict";
  var figures = JSON.parse(document.getElementById("dashboard-data").textContent);
  var palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
  var hours = figures.hours.map(function (h) { return h.slice(11) + ":00"; });
  window.payrouterCharts = {};

  function draw(id, config) {
    config.options = Object.assign({animation: false, responsive: true}, config.options || {});
    window.payrouterCharts[id] = new Chart(document.getElementById(id), config);
  }
  function perChannel(field) {
    return figures.channels.map(function (c, i) {
      return {label: c.channel, data: c[field], borderColor: palette[i % palette.length],
              backgroundColor: palette[i % palette.length], spanGaps: true, tension: 0.2};
    });
  }
  draw("chart-volume", {type: "bar", data: {labels: hours, datasets: perChannel("volume")},
                        options: {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}}});
  draw("chart-success", {type: "line", data: {labels: hours, datasets: perChannel("success_rate")},
                         options: {scales: {y: {min: 0, max: 100}}}});
  draw("chart-declines", {type: "bar", data: {
    labels: figures.declines.map(function (d) { return d.code; }),
    datasets: [{label: "declines", data: figures.declines.map(function (d) { return d.count; }),
                backgroundColor: "#d62728"}]}, options: {indexAxis: "y", plugins: {legend: {display: false}}}});
  draw("chart-webhooks", {type: "bar", data: {labels: ["pending", "sending", "failed (24 h)"],
    datasets: [{label: "deliveries", data: [figures.webhooks.pending, figures.webhooks.sending,
                                            figures.webhooks.failed_24h],
                backgroundColor: ["#ff7f0e", "#1f77b4", "#d62728"]}]},
    options: {plugins: {legend: {display: false}}, scales: {y: {beginAtZero: true}}}});
  var byChannel = {};
  figures.issues.forEach(function (i) { byChannel[i.channel] = (byChannel[i.channel] || 0) + i.count; });
  draw("chart-issues", {type: "doughnut", data: {labels: Object.keys(byChannel),
    datasets: [{data: Object.values(byChannel), backgroundColor: palette}]}});
})();
