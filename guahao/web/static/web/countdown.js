// The lock countdown on the hold page. Reads data-expires-at (ISO 8601 from the server) and
// data-now (the server's time when it rendered the page), so a phone whose clock is wrong still
// counts the right minutes; at zero it hides the live parts (form, actions) and shows the expiry
// message. No inline script (CSP).
(function () {
  "use strict";

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function start(box) {
    var serverNow = Date.parse(box.getAttribute("data-now"));
    var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();
    var expiresAt = Date.parse(box.getAttribute("data-expires-at")) - skew;
    var clock = box.querySelector("[data-countdown-clock]");
    var expired = document.querySelector("[data-countdown-expired]");
    var timer = null;

    function tick() {
      var left = Math.max(0, Math.floor((expiresAt - Date.now()) / 1000));
      if (clock) {
        clock.textContent = pad(Math.floor(left / 60)) + ":" + pad(left % 60);
      }
      if (left <= 0) {
        if (timer !== null) {
          clearInterval(timer);
        }
        box.hidden = true;
        document.querySelectorAll("[data-countdown-live]").forEach(function (el) {
          el.hidden = true;
        });
        if (expired) {
          expired.hidden = false;
        }
      }
    }

    tick();
    timer = setInterval(tick, 1000);
  }

  function init() {
    document.querySelectorAll("[data-countdown]").forEach(start);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
