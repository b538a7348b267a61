// Patient pages: small behaviours only (no inline scripts: the CSP allows scripts from this origin).
(function () {
  "use strict";
  var WAIT = 60;

  // After a sign-in code is sent, the button waits out the resend interval with a visible countdown.
  function countdown(button) {
    var left = WAIT;
    var label = button.textContent;
    button.disabled = true;
    var tick = function () {
      if (left <= 0) { button.disabled = false; button.textContent = label; return; }
      button.textContent = left + "秒后重发";
      left -= 1;
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "code-status") return;
    if (target.querySelector('[data-code-sent="1"]')) {
      var button = document.querySelector("[data-send-code]");
      if (button) countdown(button);
    }
  });
})();
