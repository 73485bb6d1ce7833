"""Face profiling (Zhu et al., DESIGN §6): rotate a fitted face and its background out of plane and re-render.

Modules, in the order a sample goes through them:
  `mesh`       the face mesh (64x64-grid 3DMM restricted to the trimmed face) and its iso-lines
  `contour`    landmark marching along the iso-lines: the face's outline in the image
  `anchors`    image meshing of the background around the face, anchor depth and anchor re-placement
  `rotate`     the pose change (yaw/pitch increment about the mesh centroid)
  `raster`     a vectorised triangle rasteriser with a z-buffer
  `synthesize` the whole method: one source image + label -> one rotated 120x120 sample
  `preview`    a contact sheet of a source and its views, for looking at (`r3fa synth preview`)
"""

from r3fa.profiling.synthesize import ProfiledFace, profile_face

__all__ = ["ProfiledFace", "profile_face"]
