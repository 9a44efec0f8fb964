// semsearch-sqlite pages.
// 1. Marks each result grid with how many of its images really decoded
//    (data-loaded = images with naturalWidth > 0, data-complete once all have settled).
// 2. The upload form: a preview of the chosen image, drag-and-drop and paste, and a
//    progress line while the server embeds the image.
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

  function imageFile(list) {
    for (var i = 0; list && i < list.length; i++) {
      if (list[i].type && list[i].type.indexOf("image/") === 0) return list[i];
    }
    return null;
  }

  function upload(form) {
    var input = form.querySelector("input[type=file]");
    var drop = form.querySelector(".semsearch-drop");
    var chosen = form.querySelector(".semsearch-chosen");
    function show() {
      var file = input.files && input.files[0];
      if (!file || !chosen) return;
      if (chosen.src) URL.revokeObjectURL(chosen.src);
      chosen.src = URL.createObjectURL(file);
      chosen.alt = "the chosen image, " + file.name;
      chosen.hidden = false;
    }
    function use(file) {
      // a dropped or pasted file goes into the form's own input, then the form is sent
      var transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      show();
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("semsearch-dragging"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("semsearch-dragging"); });
    });
    drop.addEventListener("drop", function (e) {
      e.preventDefault();
      var file = imageFile(e.dataTransfer && e.dataTransfer.files);
      if (file) use(file);
    });
    document.addEventListener("paste", function (e) {
      var file = imageFile(e.clipboardData && e.clipboardData.files);
      if (file) { e.preventDefault(); use(file); }
    });
    form.addEventListener("submit", function () {
      form.classList.add("semsearch-busy");
      var button = form.querySelector("input[type=submit]");
      if (button) { button.disabled = true; button.value = "Searching\u2026"; }
    });
  }

  function start() {
    var imgs = document.querySelectorAll(".semsearch-grid img");
    for (var i = 0; i < imgs.length; i++) {
      imgs[i].addEventListener("load", report);
      imgs[i].addEventListener("error", report);
    }
    report();
    var forms = document.querySelectorAll("form.semsearch-upload");
    for (var f = 0; f < forms.length; f++) upload(forms[f]);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
  window.addEventListener("load", report);
  // back from the results page: the form is usable again
  window.addEventListener("pageshow", function () {
    var forms = document.querySelectorAll("form.semsearch-busy");
    for (var f = 0; f < forms.length; f++) {
      forms[f].classList.remove("semsearch-busy");
      var button = forms[f].querySelector("input[type=submit]");
      if (button) { button.disabled = false; button.value = "Search"; }
    }
  });
})();
