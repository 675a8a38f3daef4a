// ESP processing: see the files of this module.
