// Refresh the page every 10 s, unless the operator is typing in a field.
setInterval(function () {
  var active = document.activeElement;
  if (!active || (active.tagName !== "INPUT" && active.tagName !== "TEXTAREA")) {
    window.location.reload();
  }
}, 10000);
