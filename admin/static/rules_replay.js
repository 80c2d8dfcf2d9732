// The Rules page's replay runs as a job on the batch queue: poll its result and put it in place,
// leaving the draft as typed. The server answers 202 while the job runs, 200 once it is done.
(function () {
  "use strict";
  var pending = document.getElementById("replay-pending");
  if (!pending) { return; }
  var url = pending.getAttribute("data-poll");
  function poll() {
    fetch(url, {credentials: "same-origin"}).then(function (answer) {
      return answer.text().then(function (html) {
        if (answer.status === 202) { setTimeout(poll, 500); return; }
        pending.outerHTML = answer.ok ? html : '<div class="alert alert-danger" id="replay-failed">' +
          "The replay's result could not be read (HTTP " + answer.status + ").</div>";
      });
    }).catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
})();
