// Marks on <body> how many of the page's images loaded (data-img-ok) and how many did not (data-img-broken), once
// the page has loaded: the docs test reads these from headless Chromium's DOM dump.
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), ok = 0, broken = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; else broken++; });
  document.body.setAttribute("data-img-ok", ok);
  document.body.setAttribute("data-img-broken", broken);
});
