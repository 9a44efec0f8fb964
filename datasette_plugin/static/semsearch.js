// Marks each result grid with how many of its images really decoded
// (data-loaded = images with naturalWidth > 0, data-complete once all have settled).
(function () {
  function report() {
    var grids = document.querySelectorAll(".semsearch-grid");
    for (var g = 0; g < grids.length; g++) {
      var imgs = grids[g].querySelectorAll("img");
      var loaded = 0, settled = 0;
      for (var i = 0; i < imgs.length; i++) {
        if (imgs[i].complete) {
          settled++;
          if (imgs[i].naturalWidth > 0) loaded++;
        }
      }
      grids[g].setAttribute("data-images", imgs.length);
      grids[g].setAttribute("data-loaded", loaded);
      grids[g].setAttribute("data-complete", settled === imgs.length ? "true" : "false");
    }
  }
  function watch() {
    var imgs = document.querySelectorAll(".semsearch-grid img");
    for (var i = 0; i < imgs.length; i++) {
      imgs[i].addEventListener("load", report);
      imgs[i].addEventListener("error", report);
    }
    report();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", watch);
  } else {
    watch();
  }
  window.addEventListener("load", report);
})();
