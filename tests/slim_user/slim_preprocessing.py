"""slim's documented evaluation preprocessing, written with TensorFlow's own ops (tf.compat.v1), as a
reference for the kit's numpy presets: vgg_preprocessing.preprocess_for_eval and
inception_preprocessing.preprocess_for_eval, step by step."""
import tensorflow as tf

R_MEAN, G_MEAN, B_MEAN = 123.68, 116.78, 103.94


def vgg_eval(image, height, width, resize_side):
    """uint8 HxWx3 -> float32: aspect-preserving resize of the smaller side, central crop, means."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    side = tf.cast(resize_side, tf.float32)
    scale = tf.cond(tf.greater(h, w), lambda: side / w, lambda: side / h)
    new_h, new_w = tf.cast(tf.math.rint(h * scale), tf.int32), tf.cast(tf.math.rint(w * scale), tf.int32)
    resized = tf.squeeze(tf.compat.v1.image.resize_bilinear(tf.expand_dims(image, 0), [new_h, new_w],
                                                            align_corners=False), [0])
    offset_h, offset_w = (tf.shape(resized)[0] - height) // 2, (tf.shape(resized)[1] - width) // 2
    cropped = tf.slice(resized, tf.stack([offset_h, offset_w, 0]), [height, width, 3])
    return tf.cast(cropped, tf.float32) - tf.constant([R_MEAN, G_MEAN, B_MEAN])


def inception_eval(image, height, width, central_fraction=0.875):
    """uint8 HxWx3 -> float32 in [-1, 1]: scale to [0, 1], central crop, bilinear resize, (x - 0.5) * 2."""
    image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    image = tf.image.central_crop(image, central_fraction=central_fraction)
    image = tf.squeeze(tf.compat.v1.image.resize_bilinear(tf.expand_dims(image, 0), [height, width],
                                                          align_corners=False), [0])
    return tf.multiply(tf.subtract(image, 0.5), 2.0)


def decode(path):
    """slim's dataset readers decode with TensorFlow (3 channels, EXIF ignored)."""
    data = tf.io.read_file(path)
    return tf.io.decode_image(data, channels=3, expand_animations=False)
